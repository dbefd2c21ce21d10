// Package jobs is the host's durable job history: every operation the
// host runs (backup, restore, prune, check, serve-point, consolidation)
// is a job with a state, live progress, a summary and log lines, kept in
// a bbolt database under the datastore (DATASTORE/jobs.db).
//
// Vocabulary:
//   - Store: the history; one per host process (bbolt locks the file).
//   - Run: the handle of a job being run, through which its runner
//     reports stage, progress, log lines and the end.
//   - interrupted: the end state of a job that was running when the host
//     stopped without ending it (a crash, SIGKILL, power loss). Open
//     marks such jobs, so no job is ever left "running" by a dead host.
//   - retention: ended jobs beyond Options.MaxJobs or older than
//     Options.MaxAge are dropped with their logs, oldest first.
//
// The file's buckets and invariants are in docs/jobs.md.
//
// Progress lives in memory while a job runs and is written to the
// database when the stage changes and when the job ends, so a busy
// backup costs no fsync per progress report.
package jobs

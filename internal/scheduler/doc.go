// Package scheduler runs the host's protection policies: a daemon.Service
// that backs up the disks a policy selects on its schedule, applies its
// retention after each success, prunes and checks on their own
// schedules, and records everything it runs as jobs (internal/jobs).
//
// Vocabulary:
//   - policy: what /v1/policies holds (api.Policy): sources, schedule,
//     repository, retention, prune and check schedules, limits.
//   - source: a disk the policy selects (by name, glob or label), or a
//     hypervisor source URI (qemu+unix://, libvirt://, qemu+ssh://;
//     internal/sources) whose drives are backed up together, in one
//     job named by the URI, with the policy's quiescing (Quiesce).
//   - run: one firing of a schedule; a backup run starts one job per
//     source, each retried with backoff up to the policy's Retries.
//   - missed run: a schedule time that passed while the host was down.
//     The scheduler remembers each policy's last run (policies.json), so
//     at start a policy whose next time after its last run has passed
//     runs once, however many times it was missed.
//   - key: a policy's repository is opened once (Argon2id at the
//     repository's strength) when the policy is loaded or changed and
//     kept open in memory, so scheduled backups pay no key derivation.
//     Secrets live in DATASTORE/policy-credentials.json, mode 0600,
//     and never in policies.json, the job history, logs or answers.
//   - stale: a source whose last successful backup is older than the
//     policy's StaleAfter.
//
// Limits: each policy runs at most MaxConcurrent backups at once, the
// host at most Options.MaxConcurrent across policies; a source already
// queued or running is not queued again.
package scheduler

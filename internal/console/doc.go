// Package console is the host's web console, served by the API's
// listeners at / (internal/api authenticates: the unix socket is
// trusted, TCP needs a session cookie from a token or a one-time link).
// Its assets are embedded (go:embed) and need no build step; the pages
// are drawn in the browser from JSON, every name set as text (never as
// markup), and update live from server-sent events.
//
// Vocabulary:
//   - source: a disk of the datastore; protected when a policy selects
//     it.
//   - point: a restore point a policy's backup job made, as the job
//     history records it (time, size, changed/read/new/stored bytes,
//     duration).
//   - index: the points of every source, kept in memory from the job
//     history (built once at start, then fed by each job's end), so a
//     page for 1,000 disks × 100 points is served without reading the
//     database.
//   - grid: per source and day (last 30 days), the outcome of the day's
//     backups (failed if any failed and none succeeded after).
package console

// Package recovery runs instant recoveries on the host, as jobs started
// through the API (POST /v1/recoveries): the restore point is served
// read-write over NBD on a unix socket under the datastore at once, the
// guest's writes kept in an overlay beside it; in the background every
// chunk is copied into a new disk of the host, and the export then
// switches over to that disk on the same NBD connections. It is the
// CLI's `recover --overlay` (the same backup.Recover and its invariants
// R1–R4, docs/overlay.md) run by the host. The CLI's own recovery is
// here too (local.go: CheckOverlay, OpenTarget, Copy, SwitchedExport),
// so cmd/blockwise only serves the point.
//
// Requests reach the service on any API listener (the unix socket, or
// TCP with TLS and a token). None carries a secret: the point is in a
// protection policy's repository (Options.PolicyRepo, the scheduler's,
// opened with the credentials the host keeps for the policy) or in the
// host's --points-repo (Options.OpenRepo); the overlay and the socket
// are under the datastore, never a path the client names.
//
// Vocabulary:
//   - recovery: named by its target disk; its directory
//     DATASTORE/recoveries/NAME holds the overlay, recover.json (phase
//     copying or switched) and the copied-chunk checkpoint; its socket
//     DATASTORE/recoveries/NAME.sock stays the same across resumes, so a
//     QEMU with reconnect-delay rides over a host restart.
//   - job: one run of a recovery (kind "recover", source NAME). Canceled
//     before the switch, or interrupted by a host stop or kill -9 (the
//     job history marks it), the overlay is kept and a request with
//     resume continues; a copy that fails keeps serving from the overlay
//     until canceled. After the switch the job serves the new disk until
//     canceled, then ends succeeded and removes the directory.
package recovery

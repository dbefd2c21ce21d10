// Package transport chooses how a backup proxy reaches a snapshot's data
// (and a restore its target), like VMware VDDK's transport modes:
//
//   - san: the proxy mounts the host's datastore and reads the snapshot's
//     frozen layer files itself (disk.OpenSnapshotDirect); the host only
//     snapshots and answers changed areas. A run held by one layer file is
//     mapped rather than read (backup.Lender), which spares copying it out
//     of the page cache. Refused when the directory is not the host's
//     datastore (datastore ID check) or a layer changes under the reader.
//   - hotadd: proxy and host share a machine; the host attaches the
//     snapshot through a private unix-socket NBD export for this backup
//     only, removed on Close.
//   - nbdssl, nbd: NBD over TCP, with TLS verified against the user's CA
//     or plain; several connections when the export allows multi-conn, or
//     one per address with failover (nbd.Multipath) when the host
//     listens on several.
//
// Open tries an ordered list ("san:hotadd:nbdssl:nbd" by default); each
// mode checks its preconditions and the first that passes is used. The
// Report names the mode and why each earlier one was skipped. A TLS
// verification failure in nbdssl is final: falling through to plain nbd
// would let whoever broke TLS choose cleartext.
//
// Restores write to a Target: a live disk through OpenTarget (the same
// modes, san excepted), an NBD export by URI (DialURI) or a new sparse
// raw file (CreateFile). ReadTest measures a mode by reading a fresh
// snapshot of a disk end to end (blockwise read-test).
package transport

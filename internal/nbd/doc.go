// Package nbd speaks the Network Block Device protocol: a Server that
// serves Exports to any NBD client (qemu, libnbd, the Linux kernel) and a
// Client used by backup, replication and multipath to talk to such servers.
// The package covers the wire only; what an export stores is the business
// of whoever implements Export.
//
// Vocabulary, following the NBD specification (doc/proto.md of
// NetworkBlockDevice/nbd):
//
//   - Export: one block device offered by a server, addressed by name.
//     The server obtains it from an Exporter for each connection.
//   - Handshake (or negotiation, option haggling): the phase after
//     connecting in which the client sends options (NBD_OPT_*) and the
//     server answers with option replies (NBD_REP_*). Only the "fixed
//     newstyle" handshake is spoken.
//   - Transmission: the phase after NBD_OPT_GO or NBD_OPT_EXPORT_NAME, in
//     which the client sends requests (NBD_CMD_*) and the server replies.
//   - Handle (also "cookie"): the 64-bit value the client puts in a
//     request and the server echoes in its reply; replies may come out of
//     order, so the handle is what pairs them.
//   - Simple reply: a fixed header with an error code, followed by data
//     for a successful READ. Structured reply: a sequence of chunks, the
//     last one flagged DONE; negotiated with NBD_OPT_STRUCTURED_REPLY and
//     needed for sparse reads (OFFSET_HOLE) and BLOCK_STATUS.
//   - Meta context (metadata context): a named kind of per-extent state a
//     client can query with BLOCK_STATUS, such as "base:allocation"
//     (holes and zeroes) or "qemu:dirty-bitmap:NAME" (changed blocks).
//     The client selects contexts with NBD_OPT_SET_META_CONTEXT and the
//     server assigns each a numeric context ID for that connection.
//   - Extent: a run of bytes sharing one set of context flags.
//   - Transmission flags: the 16 bits the server sends with the export
//     size telling the client what it may do (read-only, flush, FUA,
//     trim, write-zeroes, multi-connection, ...).
//   - Block sizes: the minimum, preferred and maximum sizes the export
//     wants requests to respect (NBD_INFO_BLOCK_SIZE). The maximum is
//     also the largest READ or WRITE payload accepted.
//
// Concurrency: per connection the server runs one reader goroutine (it
// alone touches the socket's read side, so request framing never
// interleaves), a bounded pool of workers (a slow request does not stall
// the others, and memory stays bounded), and one writer goroutine (reply
// frames must not interleave). Replies therefore go out in completion
// order, which NBD allows. The Client mirrors this: callers write
// requests under a lock, one reader goroutine routes replies by handle.
//
// Ownership: every Export the server gets from Exporter.Open is closed by
// the server once the connection (or the NBD_OPT_INFO query) using it is
// done, so an Exporter sharing one instance between connections must make
// Close reference-counted or a no-op.
package nbd

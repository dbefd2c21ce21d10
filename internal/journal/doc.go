// Package journal is blockwise's append-only metadata log. A disk keeps one
// journal per checkpoint generation; it records what changed in memory since
// that checkpoint (layer maps, CBT bits, CBT write intents) so a restart
// can rebuild the state without rewriting whole maps at every flush.
//
// Layout: a 20-byte metafile header (magic "BWJRNL01", version 2, body =
// the 8-byte generation), then records:
//
//	0 length uint32  payload length
//	4 crc    uint32  CRC-32C of type byte + payload
//	8 type   uint8
//	9 payload
//
// Replay stops at the first record that is short or fails its checksum: a
// crash can tear only the tail written after the last sync, and nothing
// after a torn record was ever synced, so it is dropped and truncated.
//
// A journal may keep a reserve (Reserve): space preallocated past its end
// (fallocate with FALLOC_FL_KEEP_SIZE, invisible to replay, which reads up
// to the file's size), so appends keep fitting for a while after the file
// system fills. Short tells the CBT tracker when it is nearly used up.
//
// Version 2 differs from 1 only in the record types a journal may hold
// (docs/format.md): version 1 journals are still replayed, and a binary
// that knows only version 1 refuses a version 2 journal instead of
// misreading it.
package journal

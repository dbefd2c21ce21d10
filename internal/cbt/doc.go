// Package cbt is blockwise's Changed Block Tracking: it remembers which
// blocks of one virtual disk were written, so a backup asks "what changed
// since change ID X" instead of reading the disk.
//
// Vocabulary:
//   - block: the tracking unit, Granularity bytes (default 64 KiB).
//   - epoch: the writes between two change IDs. Epoch s+1 is open while
//     the disk's current change ID is s; taking a snapshot closes it.
//   - change ID: "<disk-uuid>/<seq>", the disk's state when epoch seq
//     closed. Changed(since, until) is the union of epochs since+1..until.
//   - region: the coarse unit of write intents (default 256 MiB). Before the
//     first write to a region is acknowledged, the fact that the region may
//     have changed is made durable (group-committed through IntentLog), so
//     a crash at any instant never loses a change: on recovery every block of
//     every intent region counts as changed. Rewrites of a region already
//     marked cost nothing. Intents are cleared at each checkpoint, when the
//     fine map itself is durable.
//   - base: the oldest change ID still answerable; older epochs are
//     dropped beyond Retain, which expires their IDs.
//
// The tracker knows no files: the disk package persists its checkpoint
// (Encode/Decode) and its intent records (through IntentLog). Between
// checkpoints the fine map lives in memory only: after a crash, the intent
// regions (durable before any write they cover) stand in for it.
package cbt

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
//     even a power loss never loses a change: on recovery every block of
//     every such region counts as changed. Intents are cleared at each
//     checkpoint, when the fine map itself is durable.
//   - block record: before the first write into a block since the last
//     checkpoint, the block is appended to the journal, not synced
//     (RecordBlocks, group-committed with any region record). A process
//     crash keeps it: it is in the page cache.
//   - session: the records a process appended to a journal, after its
//     RecordSession (the machine's boot ID). Recovery trusts a session's
//     block records only under the same boot ID (the machine did not
//     restart, so none was lost) and then reports just those blocks; any
//     other session is recovered from its regions. Rewrites of recorded
//     blocks cost nothing.
//   - regions only: when the journal has no room left for block records
//     (its preallocated reserve ran short on a full file system, or an
//     append found no space: IntentLog returns ErrRegionsOnly or ENOSPC),
//     the tracker appends a RecordRegionsOnly and, until the next
//     checkpoint, region records only: overwrites in recorded regions
//     then need no journal space at all. Recovery counts the regions of
//     such a session whole, under the same boot ID too.
//   - base: the oldest change ID still answerable; older epochs are
//     dropped beyond Retain, which expires their IDs.
//
// The tracker knows no files: the disk package persists its checkpoint
// (Encode/Decode), its intent and block records (through IntentLog) and
// the session records (SessionRecord), and hands a journal's records back
// to Replay with the boot ID. Between checkpoints the fine map lives in
// memory and in block records; after a crash, the block records of this
// boot, or else the regions, stand in for it.
package cbt

// Package replica is site recovery: CBT replication of disk groups from
// one host (the source) to another (the target), with test failover,
// planned migration, disaster failover, reprotect and split-brain
// detection. docs/replication.md has the state machine, the files and
// the numbered invariants cited here as "invariant R<n>".
//
// Vocabulary:
//
//   - group: disks replicated together (a consistency group): one cycle
//     snapshots all of them at one instant (host.SnapshotGroup).
//   - source / target: the host whose disks are protected, and the host
//     keeping their replicas. The source runs the cycles; the target
//     answers the replica routes (/v1/replicas, token scope
//     "replication") and the recovery operations.
//   - point: a complete replica instant on the target: one snapshot per
//     disk named rp-SEQ, listed in the target's group file only once the
//     whole delta of every disk is durable (invariant R1).
//   - cycle: one source snapshot of the group (rep-GROUP-SEQ), the CBT
//     areas since the last acknowledged point sent in batches, each
//     acknowledged by the target once durable (resume point), then a
//     commit that makes the point.
//   - staging: the target's record of a cycle in progress (cycle ID and
//     per-disk offset acknowledged); data lands in the replica disk's
//     live layer, which is read-only to everyone else.
//   - seed: an existing target disk compared block by block (BLAKE3 of
//     64 KiB blocks, Checksummer) so only differing blocks travel.
//   - failover: the target's replica disks become writable (disaster:
//     the latest point; planned: after a final sync run by the source;
//     test: scratch copies over a point while replication goes on).
//   - reprotect: the failed-over side becomes the source toward the old
//     one, whose later writes are kept in a snapshot and overwritten
//     where either side changed since the common point.
package replica

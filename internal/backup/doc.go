// Package backup takes CBT-driven, incremental-forever backups of virtual
// disks into a repository, and restores them.
//
// Vocabulary:
//   - Host: what a backup asks of the machine that runs the disk (through
//     the client API): a snapshot, the changed areas since a change ID, the
//     NBD address of the snapshot, and the snapshot's removal.
//   - Source: where the snapshot's bytes are read (a transport: NBD, or
//     the datastore's files for san).
//   - lend: a Lender source hands out a run's bytes in place (a memory
//     map of the datastore's file) instead of copying them; only runs of
//     at least 1 MiB, since unmapping costs more than copying less. Lent bytes can
//     change under the reader, so each lent run is verified after its
//     chunks are stored, and the writer verifies again before each index
//     file while runs are in flight (repo.SnapshotWriter.VerifyBeforeIndex):
//     a blob made from changed bytes is never named by an index file.
//   - plan: the chunk slots to read — those overlapping a changed area. A
//     partly changed chunk is read whole from the snapshot.
//   - restore point: a repository manifest. Every backup writes a complete
//     one (the parent's slots plus the changed ones), so each restores on
//     its own: incremental on the wire, full in the catalogue.
//   - rollback: a restore point written back into its own disk, only
//     where CBT says the disk changed since the point's change ID
//     (VMware's quick rollback); refused for another disk or when CBT
//     cannot answer.
//   - lease: a Leaser host lends a disk to one backup at a time (two would
//     consolidate their snapshots under each other's readers); the second
//     fails with ErrLeaseHeld naming the holder. Renewed every quarter of
//     its TTL, released at the end; lost (the backup stops, ErrLeaseLost)
//     when a renewal says so or none succeeded for a TTL; a holder of this
//     machine whose process is gone is taken over at once.
//   - lost slots: the parent's slots whose blobs no index file holds (a
//     pack lost, then repair index): read again like changed ones
//     (repo.SnapshotWriter.ParentLost), never carried over.
//   - point export: a restore point served read-only over NBD straight
//     from the repository (PointExport), for instant recovery: chunks are
//     loaded and verified per request, zero slots are holes.
//   - consistency: what a Snapshot says of itself ("application" when the
//     guest was quiesced, "crash" otherwise, and why), recorded in the
//     restore point. A host that quiesces by itself (a QEMU or libvirt
//     source) sets it; for others Options.Quiesce brackets CreateSnapshot
//     with a freeze (internal/quiesce).
//   - proof: the point's hash tree (docs/repository.md, T1–T6) is its
//     parent's with the leaves of every block read set as they are read
//     (prover); its root is compared with a RootHost's root of the
//     snapshot before the commit. A mismatch is located (a LeafHost's
//     leaves, else the blocks read), re-read once through the writer
//     (repo.SnapshotWriter.Reopen), and fails with ErrRootMismatch if it
//     persists. Hosts without a tree get a computed, unproven root.
//
// Flow of Run: lease → snapshot → changed areas since the change ID of the disk's
// last restore point in this repository ("*" for the first, or when the
// host says the ID is invalid: a full read of allocated areas, and the
// result says why) → read the planned slots through the Source with
// bounded workers, with the parent's lost slots → PutChunk (and leaves) →
// prove the root → Commit (the manifest is written last).
// The snapshot is deleted whatever happens: from the moment the last read
// is done, in the background while Commit runs (it is not needed after
// that), and Run waits for the deletion before it returns.
package backup

// Package disk is blockwise's virtual disk engine: thin-provisioned disks
// in a datastore directory, redo-log snapshots, online consolidation, and
// crash-safe changed block tracking (through package cbt).
//
// Vocabulary:
//   - datastore: a directory of disks, one subdirectory each.
//   - layer: one file of a disk's chain. The bottom layer ("flat.raw") is a
//     plain sparse raw image: a disk without snapshots is that file and
//     qemu-img reads it as raw. Every other layer is a delta
//     ("delta-N.raw"): a sparse file at natural offsets plus a map saying,
//     per grain, whether the delta holds the data (present), says "zeroes
//     here" (zero) or defers to the layers below (absent).
//   - grain: the delta map unit (Options.Grain, default 4 KiB). A partial
//     write to an absent grain first copies the rest of it up from below.
//   - chain: the layers bottom first; the top one takes the live writes.
//   - snapshot: a frozen layer and the chain below it: a read-only view.
//     Taking one freezes the top and starts an empty delta (O(1)); its
//     checkpoint's files are prepared before and committed after that
//     in-memory switch, while I/O goes on (snapfast.go).
//   - consolidation: deleting a snapshot merges the delta above its layer
//     into that layer, grain by grain under the grain's lock, while the disk
//     keeps serving I/O; it is not a guest change and marks no CBT. Its
//     start commits disk.meta alone and its end is a journal record, both
//     synced while I/O goes on: the guest's pause is an in-memory switch.
//   - generation: every checkpoint (snapshot, grow, close, journal full)
//     writes new maps, a CBT checkpoint and an empty journal named by the
//     next generation, then commits them by replacing disk.meta. Between
//     checkpoints, flushes append map and CBT changes to the journal.
//     docs/format.md has the byte layouts and ordering.
//   - provision: thin (the default: space on first write), lazy-zeroed or
//     eager-zeroed (flat.raw reserved with fallocate at creation; TRIM
//     keeps the reservation). Deltas are always thin.
//   - offloads (VAAI): WriteZeroes with NO_HOLE and FAST_ZERO, Trim,
//     Reclaim (a background scan giving back all-zero grains at a bounded
//     rate), CopyFrom (the data mover: extents of any view of a disk of
//     the datastore copied by reflink or copy_file_range) and Clone.
//   - linked clone: a disk whose chain starts with hard links to another
//     disk's frozen layers (shared layers); a full clone is an
//     independent flat disk filled by CopyFrom. A shared layer is
//     unshared (copied) before a consolidation writes into it, and lives
//     until its last user is deleted (docs/format.md invariants 9–12).
//   - file system: every file operation of a datastore and its disks goes
//     through a vfs.FS, the operating system's unless WithFS gives another.
//     Tests put vfstest.CrashFS there to cut the power: it keeps only what
//     was synced (a file's data after its sync, a directory entry after its
//     directory's sync), which is the only durability the engine assumes
//     (docs/format.md, "The file-system contract").
package disk

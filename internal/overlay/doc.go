// Package overlay keeps the writes a guest makes to a restore point that
// is served read-write (instant recovery), durably and outside the
// repository, so the backup is never modified.
//
// Vocabulary:
//
//   - Overlay: one directory holding a guest's writes on top of one
//     restore point (docs/overlay.md has the byte layouts).
//   - Block: the overlay's unit (BlockSize bytes). A block is present once
//     a write, zero or trim covered it; its bytes then live in the data
//     file and the point's bytes under it are never read again.
//   - Data file: a sparse file of the disk's size; block b lives at
//     offset b*BlockSize. A zeroed block is a punched hole.
//   - Map journal: the append-only, checksummed list of present block
//     runs. Records are appended only by Sync, after the data file is
//     synced (invariant O1), so a record never names bytes that a power
//     loss could have dropped.
//
// An Overlay does not read the point: the caller merges what is present
// with what is not (backup.WritableExport).
package overlay

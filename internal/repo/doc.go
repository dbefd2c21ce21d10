// Package repo is the backup repository: it stores restore points of
// virtual disk images on a backend.Backend, encrypted, compressed and
// deduplicated, and reads them back. It knows nothing of disks: callers
// hand it fixed-size chunks aligned to image offsets ("slots").
//
// The design follows restic's repository (packs of blobs, index files,
// password-wrapped keys, write-manifest-last) with two changes for block
// images: chunks are fixed-size slots, not content-defined, because CBT
// reports changes per aligned block; and a manifest's slot table is a
// tree of content-addressed index pages, so an incremental of a huge disk
// rewrites only the pages it touched. docs/repository.md has the byte
// layouts, key derivation, write ordering and the chunk-size measurements.
//
// The entry points are Init and Open (OpenWith for a key file,
// OpenNoIndex for check and repair on a damaged index, and stats and
// prune, which read the index files themselves); a backup goes
// through NewWriter, PutChunk, Done and Commit; a restore through
// OpenImage. `go doc ./internal/repo` lists the rest: this page explains
// the vocabulary and does not repeat signatures, which drift.
//
// Encrypted repositories refuse an empty password (ErrEmptyPassword)
// unless Options.InsecureNoPassword says otherwise, as restic does;
// SetNoLock lets read-only commands use a repository that cannot be
// written (LockRead takes no lock then, Lock refuses with ErrReadOnly).
//
// # Writing a backup
//
// A full backup: NewWriter(ctx, nil, meta), PutChunk for every non-zero
// slot (slots never written read as zeros), Commit. An incremental:
// NewWriter(ctx, parentManifest, meta) and PutChunk only the slots CBT
// reports changed; all other slots keep the parent's content. Writing
// all-zero data to a slot marks it zero (a discarded region). PutChunk
// may be called from many goroutines; Commit and Abort must not race
// with it. A caller that goes through the disk in order calls Done as it
// passes slots: the index pages below are stored then, so the writer's
// memory does not grow with the disk.
//
// # Configuration
//
// Configuration is per Repository: Init and Open take Options, whose
// format fields (chunk and pack size, cipher, ...) are fixed at Init and
// whose settings (KDF cost, cache and spill directories, index memory,
// repack threshold, lock TTL) belong to the Repository value they return.
// There are no package variables to set, so two repositories in one
// process (a daemon running many policies) can differ; the zero Options
// give the documented defaults.
//
// # Errors
//
// All failures wrap one of the sentinels in errors.go (ErrWrongPassword,
// ErrCorrupt, ErrIncomplete, ErrNotFound, ErrLocked, ErrExists, ErrInvalid,
// ErrClosed)
// or a backend error; test with errors.Is.
package repo

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
// # API
//
//	Init(ctx, be, password, Options) (*Repository, error)   // ErrEmptyPassword unless Options.InsecureNoPassword
//	Open(ctx, be, password) (*Repository, error)            // ErrWrongPassword; ErrEmptyPassword
//	(*Repository).NewWriter(ctx, parent *Manifest, Meta) (*SnapshotWriter, error)
//	(*SnapshotWriter).PutChunk(ctx, slot uint64, data []byte) error   // concurrent-safe
//	(*SnapshotWriter).Done(ctx, slot uint64) error   // no PutChunk below slot follows
//	(*SnapshotWriter).VerifyBeforeIndex(func() error) // the source's check, before each index file
//	(*SnapshotWriter).Commit(ctx) (*Manifest, error)
//	(*SnapshotWriter).Abort(ctx) error
//	(*Repository).ListManifests(ctx) ([]*Manifest, error)
//	(*Repository).EachManifest(ctx, fn func(*Manifest) error) error  // holds only those in flight
//	(*Repository).Heads(ctx) ([]Head, error)  // restore points' identities, cached under CacheDir
//	(*Repository).LoadManifest(ctx, ID) (*Manifest, error)
//	(*Repository).OpenImage(ctx, ID) (*Image, error)
//	(*Image).ReadAt(p, off) / ReadAtContext(ctx, p, off) / Size() / ReadChunk(ctx, slot) / Slots(ctx, fn) / IsZero(ctx, slot)
//	(*Repository).Check(ctx, CheckOptions) (*CheckResult, error)
//	(*Repository).Forget(ctx, ID) error
//	(*Repository).Prune(ctx) (*PruneStats, error)            // ErrIncomplete: refuses, deletes nothing
//	OpenNoIndex(ctx, be, Secret) (*Repository, error)        // for Check and RepairIndex on a damaged index
//	(*Repository).RepairIndex(ctx, RepairIndexOptions) (*RepairIndexResult, error)
//	(*Repository).Lock(ctx, exclusive bool) (*Lock, error)  // ErrLocked; ErrReadOnly
//	(*Repository).LockRead(ctx) (*Lock, error) / SetNoLock(bool)  // readers; no lock on a read-only repository
//	(*Repository).AddKey(ctx, Secret, KDFParams) error; Keys; RemoveKey; OpenWith(ctx, be, Secret)
//	(*Repository).Config() Config / Close() error
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
// # Errors
//
// All failures wrap one of the sentinels in errors.go (ErrWrongPassword,
// ErrCorrupt, ErrIncomplete, ErrNotFound, ErrLocked, ErrExists, ErrInvalid,
// ErrClosed)
// or a backend error; test with errors.Is.
package repo

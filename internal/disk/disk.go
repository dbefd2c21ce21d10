package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Options for Create.
type Options struct {
	Grain      int64      // delta map unit; default DefaultGrain
	CBT        cbt.Config // tracking geometry
	DisableCBT bool
	// Provision: ProvisionThin ("" too), ProvisionLazy or ProvisionEager.
	Provision Provision
}

// DefaultGrain is the delta grain: 4 KiB matches the guest file systems'
// block and the page size, so a 4 KiB random write into a fresh delta
// copies nothing up (bench/engine.sh compares grains).
const DefaultGrain = 4096

// stripes is the number of grain locks; grain g uses stripe
// (g*grain/stripeBytes) % stripes (lockGrains).
const stripes = 1024

// stripeBytes is the span of disk one stripe lock covers.
const stripeBytes = 1 << 20

// journalLimit triggers a checkpoint when the journal grows past it.
const journalLimit = 64 << 20

// journalReserve is the space a disk's journal keeps preallocated past its
// end (journal.Log.Reserve): on a full file system, CBT block records keep
// fitting in it, and when it runs short CBT records regions only
// (docs/format.md, "Journal", Reserve).
const journalReserve = 1 << 20

// Disk is an open virtual disk. All methods are safe for concurrent use.
type Disk struct {
	dir  string
	fs   vfs.FS // every file operation goes through it (the datastore's)
	boot string // the datastore's boot ID, see Datastore.boot
	// reserve is the journal's preallocated reserve (journalReserve).
	reserve int64
	lock    io.Closer
	grain   int64

	// barrier: I/O holds it shared; structural changes (snapshot, grow,
	// checkpoint, close) hold it exclusively, so they see no I/O in flight.
	// The fields below it change only under the exclusive barrier.
	barrier sync.RWMutex
	chain   []*layer
	size    int64
	merge   *mergeState
	tracker *cbt.Tracker
	log     *journal.Log
	meta    *diskMeta
	closed  bool

	flushMu sync.Mutex // orders flushes' journal records
	// flushGate: Flush holds it shared around its barrier; lockExclusive
	// takes it first, so no flush starts a data sync (under the shared
	// barrier) while an exclusive section waits for the barrier. Go's
	// RWMutex admits no new reader once a writer waits: without the gate
	// every write queued behind that sync (checkpoint.go).
	flushGate sync.RWMutex
	// deleteMu: one DeleteSnapshot at a time writes disk.meta under the
	// shared barrier (merge.go, commitDelete).
	deleteMu sync.Mutex
	// cutMu makes the layer records a flush takes one consistent cut of
	// the maps: a consolidation moves a grain from the child's map to the
	// parent's under it, so no flush records the child's drop without the
	// parent's gain (invariants 3 and 6, docs/format.md).
	cutMu sync.Mutex
	// afterTake, when set (by tests only), is called by a flush after it
	// has taken each layer's record, with cutMu held.
	afterTake func(*layer)
	// afterReclaimRead, when set (by tests only), is called by a reclaim
	// step between reading a run and punching its zero grains.
	afterReclaimRead func()
	// afterMergeStep, when set (by tests only), is called after each step
	// of a consolidation's start (0: DeleteSnapshot) and end (1, 2, 3:
	// finishMerge).
	afterMergeStep func(step int)
	// afterSnapStep, when set (by tests only), is called after each step
	// of CreateSnapshot (snapfast.go: 0 prepared, 1 frozen, 2 files
	// synced, 3 disk.meta renamed).
	afterSnapStep func(step int)
	// commitDone: closed when the last snapshot's commit, which runs
	// without the barrier, is over (snapfast.go, waitCommit). Set under
	// the exclusive barrier.
	commitDone chan struct{}
	// dropped: files of layers a consolidation dropped from the chain in
	// memory (and in the journal) that disk.meta still names until the
	// next checkpoint; gc keeps them.
	dropped []string
	stripe  [stripes]sync.Mutex
	// cawSeq is a sequence count per stripe, odd while a compare-and-write
	// stores into the stripe: reads check it to return a CAW's bytes whole
	// (atomicread.go, invariant C5).
	cawSeq [stripes]atomic.Uint64
	// trees is the hash tree of every snapshot (tree.go); set by Open.
	trees  *trees
	bg     sync.WaitGroup
	cancel context.CancelFunc
	ctx    context.Context

	mu struct {
		sync.Mutex
		views map[string]int // open snapshot views by snapshot ID
		err   error          // sticky metadata failure
		task  *Task
		// reclaim is the running or last reclaim (reclaim.go).
		reclaim *Task
	}
}

var (
	_ io.ReaderAt = (*Disk)(nil)
	_ io.WriterAt = (*Disk)(nil)
)

// Create makes a new, empty, thin disk of size bytes and opens it.
func (ds *Datastore) Create(name string, size int64, opt Options) (*Disk, error) {
	dir, err := ds.diskDir(name)
	if err != nil {
		return nil, err
	}
	if size <= 0 || size%Sector != 0 {
		return nil, fmt.Errorf("disk %s: %w: size %d is not a positive multiple of %d", name, ErrMisaligned, size, Sector)
	}
	if opt.Grain == 0 {
		opt.Grain = DefaultGrain
	}
	if opt.Grain < Sector || opt.Grain&(opt.Grain-1) != 0 || (size+opt.Grain-1)/opt.Grain > 1<<32-1 {
		return nil, fmt.Errorf("disk %s: grain %d unusable for size %d", name, opt.Grain, size)
	}
	if err := opt.CBT.Validate(); err != nil && !opt.DisableCBT {
		return nil, err
	}
	prov, err := ParseProvision(string(opt.Provision))
	if err != nil {
		return nil, err
	}
	opt.Provision = prov
	if err := ds.fs.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("disk %s: %w", name, ErrExists)
		}
		return nil, noSpace(err)
	}
	if err := initDisk(ds.fs, dir, name, size, opt); err != nil {
		ds.fs.RemoveAll(dir)
		return nil, noSpace(fmt.Errorf("disk %s: create: %w", name, err))
	}
	// The disk's directory entry: without this sync a power loss could
	// take the whole disk away after Create returned (TestCrashPowerLoss).
	if err := vfs.SyncDir(ds.fs, ds.dir); err != nil {
		return nil, noSpace(fmt.Errorf("disk %s: create: %w", name, err))
	}
	return ds.Open(name)
}

// initDisk writes generation 1 of a new disk; disk.meta goes last.
func initDisk(fsys vfs.FS, dir, name string, size int64, opt Options) error {
	f, err := fsys.OpenFile(filepath.Join(dir, flatName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if _, err := reserve(f, opt.Provision, 0, size); err != nil {
		return err
	}
	if err := vfs.Datasync(f); err != nil {
		return err
	}
	m := &diskMeta{
		UUID: cbt.NewUUID(), Name: name, Size: size, Grain: opt.Grain,
		Created: time.Now().UTC(), Gen: 1, NextID: 1,
		Layers: []layerMeta{{ID: 0, Data: flatName}}, Provision: opt.Provision.stored(),
	}
	if !opt.DisableCBT {
		tr, err := cbt.New(opt.CBT, cbt.NewUUID(), size, nil)
		if err != nil {
			return err
		}
		m.CBT = &cbtMeta{Checkpoint: cbtName(1)}
		if err := vfs.WriteAtomic(fsys, filepath.Join(dir, cbtName(1)), tr.Encode(false)); err != nil {
			return err
		}
	}
	l, err := journal.Create(fsys, filepath.Join(dir, journalName(1)), 1)
	if err != nil {
		return err
	}
	l.Close()
	return vfs.WriteAtomic(fsys, filepath.Join(dir, metaName), m.encode())
}

// Open opens an existing disk read-write. Only one process may have a disk
// open; another gets ErrBusy.
func (ds *Datastore) Open(name string) (*Disk, error) {
	dir, err := ds.diskDir(name)
	if err != nil {
		return nil, err
	}
	return ds.openDir(dir, name)
}

// openDir opens the disk in dir (named name in errors).
func (ds *Datastore) openDir(dir, name string) (*Disk, error) {
	if _, err := ds.fs.Stat(filepath.Join(dir, metaName)); err != nil {
		return nil, fmt.Errorf("disk %s: %w", name, ErrNotFound)
	}
	lock, err := ds.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w: %v", name, ErrBusy, err)
	}
	d := &Disk{dir: dir, fs: ds.fs, boot: ds.boot, reserve: ds.reserve, lock: lock, trees: newTrees(true, 0)}
	d.mu.views = map[string]int{}
	if err := d.load(); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("disk %s: %w", name, err)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if d.tracker != nil && !ds.noTrees {
		d.trees = newTrees(false, int(d.tracker.Config().Granularity))
	}
	if err := d.loadTrees(); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("disk %s: hash trees: %w", name, err)
	}
	d.startTrees()
	if d.merge != nil {
		d.startMerge() // resume a consolidation interrupted by a stop
	}
	return d, nil
}

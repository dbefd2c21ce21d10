package backup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/retry"
)

// Errors a Host MUST wrap so backup can react.
var (
	// ErrChangeIDInvalid: ChangedAreas cannot answer for the change ID
	// (foreign, expired, reset): the backup falls back to a full read.
	ErrChangeIDInvalid = errors.New("change ID invalid")
	// ErrBusy: a passing condition (the snapshot's NBD export is still
	// closing): the call is retried.
	ErrBusy = errors.New("busy")
)

// DiskInfo identifies a disk.
type DiskInfo struct {
	UUID string
	Size int64
}

// Snapshot is a snapshot the host made for a backup.
type Snapshot struct {
	ID          string
	ChangeID    string
	Size        int64
	Created     time.Time
	Description string
	// Consistency is "application" when the guest was quiesced for the
	// snapshot, "crash" when it was not, "" when the host does not say;
	// ConsistencyReason says why. Both are recorded in the restore point.
	Consistency, ConsistencyReason string
	// TreeBlockSize is the block size of the host's hash tree of the
	// disk (the leaves of the snapshot's root); 0 when the host does not
	// say (DefaultTreeBlockSize, or the parent point's, is used).
	TreeBlockSize int
}

// Area is a changed byte range.
type Area struct{ Start, Length int64 }

// Areas is one page of changed areas covering [StartOffset, StartOffset+Length).
type Areas struct {
	StartOffset, Length int64
	Changed             []Area
}

// Host is the part of the host API a backup uses. Implementations MUST
// return errors wrapping ErrChangeIDInvalid for unanswerable change IDs.
type Host interface {
	Disk(ctx context.Context, disk string) (DiskInfo, error)
	Snapshots(ctx context.Context, disk string) ([]Snapshot, error)
	CreateSnapshot(ctx context.Context, disk, description string) (Snapshot, error)
	ChangedAreas(ctx context.Context, disk, snapshot string, start int64, changeID string) (*Areas, error)
	DeleteSnapshot(ctx context.Context, disk, snapshot string) error
}

// Source reads a snapshot's bytes. Safe for concurrent use.
type Source interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	Close() error
}

// Lender is a Source that can also lend its bytes in place (the san
// transport maps the datastore's files), which saves copying them out of
// the page cache. Lend returns nil, nil for a range it cannot lend; the
// copier then reads it. Lent bytes may change under the reader, so
// Verify MUST fail if any byte lent so far may have differed from the
// snapshot's while it was used. The copier verifies after each lent run
// and before each index file (repo.SnapshotWriter.VerifyBeforeIndex).
type Lender interface {
	Source
	Lend(off, n int64) (*fsutil.Mapping, error)
	Verify() error
}

// ErrSourceFault: reading lent bytes faulted (the file behind them was
// truncated): the source is unusable.
var ErrSourceFault = errors.New("fault reading the snapshot's mapped file")

// Options of a backup.
type Options struct {
	Disk    string
	Host    Host
	Repo    *repo.Repository
	Open    func(ctx context.Context, disk, snapshot string) (Source, error)
	Workers int // concurrent reads, default 4
	// Full ignores the previous restore point's change ID.
	Full bool
	// LeaseTTL is how long the disk's backup lease (a Leaser host's)
	// outlives its last renewal; DefaultLeaseTTL if zero.
	LeaseTTL time.Duration
	// Progress, if set, is called as bytes are read (from one goroutine
	// at a time).
	Progress func(done, total int64)
	// Stage, if set, is called as each phase of Result.Phases begins
	// ("prepare", "snapshot", "changes", "copy", "commit", "release").
	Stage func(name string)
	// SnapshotWait bounds how long the backup waits for a busy disk (a
	// consolidation of an earlier snapshot still running) before taking
	// its snapshot; 0: DefaultSnapshotWait.
	SnapshotWait time.Duration
	// Quiesce, when set, freezes the guest (through its agent) around the
	// snapshot and records the point's consistency; sources that quiesce
	// themselves (a QEMU or libvirt source) leave it nil.
	Quiesce *quiesce.Options
	// NoProve skips the hash tree: the point gets no root and is not
	// proven, and neither are the incrementals after it until a full
	// backup (for measuring what the proof costs).
	NoProve bool
}

// DefaultSnapshotWait is Options.SnapshotWait's default.
const DefaultSnapshotWait = 10 * time.Minute

// Result describes a finished backup.
type Result struct {
	Manifest   *repo.Manifest
	Parent     *repo.Manifest // nil for a first backup
	Mode       string         // "full" or "incremental"
	Reason     string         // why a backup is full
	Snapshot   Snapshot
	AreasBytes int64 // bytes CBT reported changed (or allocated)
	// LostBytes were unchanged since the parent but read again: the
	// parent's chunks there are in no index file (their pack was lost,
	// and repair index dropped them).
	LostBytes int64
	ReadBytes int64 // bytes read through the source
	Duration  time.Duration
	// Phases is where Duration went, in order: "prepare" (parent lookup,
	// stale snapshots), "snapshot", "changes" (QueryChangedAreas),
	// "copy" (read, hash, compress, encrypt, store), "prove" (the root
	// compared with the host's, and any re-read), "commit" and
	// "release" (deleting the snapshot).
	Phases []Phase
	// Root is the root of the point's hash tree (docs/format.md, H3);
	// zero when the point has none, RootNote saying why.
	Root hashtree.Hash
	// RootProven: the host's root of the snapshot equals Root.
	RootProven bool
	// RootNote says why a root is missing or not proven, or how a
	// mismatch was healed; empty for a plainly proven root.
	RootNote string
	// RereadBytes were read a second time after a root mismatch.
	RereadBytes int64
	// treeHeld is the peak of the tree's leaf bytes held in memory,
	// treeGroups of its groups (TestTreeMemoryBounded).
	treeHeld   int64
	treeGroups int
}

// Phase is one step of a backup and its wall time.
type Phase struct {
	Name     string
	Duration time.Duration
}

// phaseClock records consecutive phases, and tells onStart (if set)
// which one begins.
type phaseClock struct {
	last    time.Time
	phases  []Phase
	onStart func(string)
}

// nextPhase is the phase that follows each one.
var nextPhase = map[string]string{"prepare": "snapshot", "snapshot": "changes", "changes": "copy", "copy": "prove", "prove": "commit", "commit": "release"}

func (c *phaseClock) mark(name string) {
	now := time.Now()
	c.phases = append(c.phases, Phase{name, now.Sub(c.last)})
	c.last = now
	if next := nextPhase[name]; next != "" && c.onStart != nil {
		c.onStart(next)
	}
}

// Run takes one backup.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	start := time.Now()
	clock := &phaseClock{last: start, onStart: o.Stage}
	if o.Stage != nil {
		o.Stage("prepare")
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	info, err := o.Host.Disk(ctx, o.Disk)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", o.Disk, err)
	}
	ctx, unlease, err := holdLease(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", o.Disk, err)
	}
	defer unlease() // after the snapshot is deleted: that is the conflict
	parent, err := LatestFor(ctx, o.Repo, o.Disk, info.UUID)
	if err != nil {
		return nil, err
	}
	removeStale(ctx, o)
	clock.mark("prepare")
	snap, err := createSnapshot(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("backup %s: snapshot: %w", o.Disk, err)
	}
	clock.mark("snapshot")
	res = &Result{Snapshot: snap, Parent: parent}
	// Always remove the snapshot, failed backup or not: it costs the disk
	// a delta layer. run starts that as soon as it has read everything.
	release, waitRelease := releaser(ctx, o, snap.ID)
	err = run(ctx, o, info, res, clock, release)
	if derr := waitRelease(); derr != nil && err == nil {
		err = fmt.Errorf("delete snapshot %s: %w", snap.ID, derr)
	}
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrLeaseLost) {
		err = fmt.Errorf("%w (%w)", cause, err)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", o.Disk, err)
	}
	clock.mark("release")
	res.Duration, res.Phases = time.Since(start), clock.phases
	return res, nil
}

// releaser deletes a backup's snapshot once, in the background from the
// first call of start on, so the host consolidates while the restore
// point is committed; wait starts it if need be and returns its error.
func releaser(ctx context.Context, o Options, id string) (start func(), wait func() error) {
	errc := make(chan error, 1)
	start = sync.OnceFunc(func() {
		go func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
			defer cancel()
			errc <- deleteSnapshot(dctx, o, id)
		}()
	})
	return start, func() error { start(); return <-errc }
}

// run reads the changed areas into a writer and commits it; release
// deletes the snapshot, which run starts once the reads are done.
func run(ctx context.Context, o Options, info DiskInfo, res *Result, clock *phaseClock, release func()) error {
	areas, err := changedAreas(ctx, o, res)
	if err != nil {
		return err
	}
	clock.mark("changes")
	meta := repo.Meta{Disk: o.Disk, DiskUUID: info.UUID, ChangeID: res.Snapshot.ChangeID,
		Size: uint64(res.Snapshot.Size), Time: res.Snapshot.Created, Changed: uint64(res.AreasBytes),
		Consistency: res.Snapshot.Consistency, ConsistencyReason: res.Snapshot.ConsistencyReason}
	parent := res.Parent
	if res.Mode == "full" {
		parent = nil
	}
	w, err := o.Repo.NewWriter(ctx, parent, meta)
	if err != nil {
		return err
	}
	src, err := o.Open(ctx, o.Disk, res.Snapshot.ID)
	if err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return fmt.Errorf("open snapshot: %w", err)
	}
	if l, ok := src.(Lender); ok {
		w.VerifyBeforeIndex(l.Verify)
	}
	cs := int64(o.Repo.Config().ChunkSize)
	if areas, err = addLost(ctx, w, areas, cs, res); err != nil {
		src.Close()
		w.Abort(context.WithoutCancel(ctx))
		return err
	}
	err = copyAndProve(ctx, o, res, w, src, parent, areas, clock)
	// Every lent run has been verified by now, and the snapshot is about
	// to go: its check would fail from here on.
	w.VerifyBeforeIndex(nil)
	src.Close() // the host deletes the snapshot sooner without a reader
	if err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return err
	}
	release()
	res.Manifest, err = w.Commit(ctx)
	clock.mark("commit")
	return err
}

// copyAndProve reads the planned areas into the writer and, unless
// o.NoProve, hashes them into the point's tree and proves its root
// against the host's (docs/repository.md, T5) before the caller commits.
func copyAndProve(ctx context.Context, o Options, res *Result, w *repo.SnapshotWriter, src Source, parent *repo.Manifest, areas []Area, clock *phaseClock) error {
	cs := int64(o.Repo.Config().ChunkSize)
	cp := copier{src: src, w: w, chunk: cs, size: res.Snapshot.Size, workers: o.Workers, progress: o.Progress}
	var hr *hostRoot
	if rh, ok := o.Host.(RootHost); ok && !o.NoProve {
		// Asked now, answered while the backup reads: the host computes
		// it from the blocks CBT marked. A snapshot that does not say
		// its tree's block size gets its parent's, or the default; a
		// host tree of another block size then leaves the root unproven.
		rctx, cancel := context.WithCancel(ctx)
		hr = fetchRoot(rctx, rh, o.Disk, res.Snapshot.ID)
		defer func() { cancel(); <-hr.done }()
	}
	if o.NoProve {
		res.RootNote = "not computed (--no-prove)"
	} else if cp.prove, res.RootNote = newProver(ctx, o, res, parent, areas); cp.prove != nil {
		areas = withShrunkTail(areas, parent, res.Snapshot.Size, cp.prove.bs)
		cp.prove.storeInto(ctx, w)
	}
	err := cp.run(ctx, plan(areas, cs, res.Snapshot.Size), &res.ReadBytes)
	clock.mark("copy")
	if err == nil && cp.prove != nil {
		reread := func(diff []Area) error { return rereadAreas(ctx, &cp, diff, res) }
		if err = cp.prove.prove(ctx, o, res, hr, reread); err == nil {
			err = w.SetTree(cp.prove.t, res.RootProven)
		}
		res.treeHeld, res.treeGroups = cp.prove.t.maxHeld, cp.prove.t.maxGroups
	}
	clock.mark("prove")
	return err
}

// withShrunkTail adds the image's last block to the areas to read when
// the disk shrank to a size that ends inside a block: the parent's leaf
// there hashed bytes now past the end.
func withShrunkTail(areas []Area, parent *repo.Manifest, size, bs int64) []Area {
	if parent == nil || int64(parent.Size) <= size || size%bs == 0 {
		return areas
	}
	start := size / bs * bs
	areas = append(areas, Area{start, size - start})
	slices.SortFunc(areas, func(a, b Area) int { return cmp.Compare(a.Start, b.Start) })
	return areas
}

// rereadAreas reads areas again after a root mismatch, into slots the
// writer may already have passed (repo.SnapshotWriter.Reopen).
func rereadAreas(ctx context.Context, cp *copier, areas []Area, res *Result) error {
	slices.SortFunc(areas, func(a, b Area) int { return cmp.Compare(a.Start, b.Start) })
	runs := plan(areas, cp.chunk, cp.size)
	var slots []uint64
	for _, r := range runs {
		for s := r.first; s < r.first+r.n; s++ {
			slots = append(slots, uint64(s))
		}
	}
	if err := cp.w.Reopen(ctx, slots); err != nil {
		return err
	}
	again := copier{src: cp.src, w: cp.w, chunk: cp.chunk, size: cp.size, workers: cp.workers, prove: cp.prove}
	err := again.run(ctx, runs, &res.RereadBytes)
	res.ReadBytes += res.RereadBytes
	return err
}

// addLost adds to the areas to read those of the parent's slots whose
// blobs no index file holds (a lost pack): re-read from the disk, they
// are stored anew, and the new point restores whole. The writer refuses
// to commit a slot left unread (repo.ErrIncomplete).
func addLost(ctx context.Context, w *repo.SnapshotWriter, areas []Area, chunk int64, res *Result) ([]Area, error) {
	lost, err := w.ParentLost(ctx)
	if err != nil {
		return nil, fmt.Errorf("look for blobs the repository lost: %w", err)
	}
	if len(lost) == 0 {
		return areas, nil
	}
	size := res.Snapshot.Size
	for _, r := range lost {
		start := int64(r.First) * chunk
		if start >= size {
			break
		}
		a := Area{start, min(int64(r.N)*chunk, size-start)}
		res.LostBytes += a.Length
		areas = append(areas, a)
	}
	slices.SortFunc(areas, func(a, b Area) int { return cmp.Compare(a.Start, b.Start) })
	return areas, nil
}

// changedAreas asks the host what to read, falling back to a full read of
// the allocated areas when there is no usable parent.
func changedAreas(ctx context.Context, o Options, res *Result) ([]Area, error) {
	since := "*"
	res.Mode, res.Reason = "full", "first backup of this disk in this repository"
	switch {
	case o.Full:
		res.Reason = "full backup requested"
	case res.Parent != nil && res.Parent.ChangeID != "":
		since, res.Mode, res.Reason = res.Parent.ChangeID, "incremental", ""
	}
	areas, err := allAreas(ctx, o, res.Snapshot, since)
	if errors.Is(err, ErrChangeIDInvalid) && since != "*" {
		res.Mode, res.Reason = "full", fmt.Sprintf("the host cannot answer since %s (%v)", since, err)
		areas, err = allAreas(ctx, o, res.Snapshot, "*")
	}
	for _, a := range areas {
		res.AreasBytes += a.Length
	}
	return areas, err
}

func allAreas(ctx context.Context, o Options, s Snapshot, since string) ([]Area, error) {
	var out []Area
	for pos := int64(0); pos < s.Size; {
		page, err := o.Host.ChangedAreas(ctx, o.Disk, s.ID, pos, since)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Changed...)
		if page.Length <= 0 {
			return nil, fmt.Errorf("host returned an empty page at %d", pos)
		}
		pos = page.StartOffset + page.Length
	}
	return out, nil
}

// ownerTag describes a backup's snapshot so a later backup can tell it
// was left by a process that died (SIGKILL skips the deferred delete).
func ownerTag() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s host=%s pid=%d", snapshotTag, host, os.Getpid())
}

const snapshotTag = "blockwise backup"

// removeStale deletes snapshots of earlier backups on this host whose
// process is gone. A live backup's snapshot (another process) is kept.
func removeStale(ctx context.Context, o Options) {
	snaps, err := o.Host.Snapshots(ctx, o.Disk)
	if err != nil {
		return
	}
	host, _ := os.Hostname()
	for _, s := range snaps {
		var h string
		var pid int
		if _, err := fmt.Sscanf(s.Description, snapshotTag+" host=%s pid=%d", &h, &pid); err != nil || h != host || pid <= 0 {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			deleteSnapshot(ctx, o, s.ID)
		}
	}
}

// createSnapshot waits out a busy disk (a consolidation of an earlier
// snapshot still running) for up to o.SnapshotWait.
func createSnapshot(ctx context.Context, o Options) (Snapshot, error) {
	wait := o.SnapshotWait
	if wait == 0 {
		wait = DefaultSnapshotWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var snap Snapshot
	take := func(ctx context.Context) error {
		return retryBusy(ctx, func() (err error) {
			snap, err = o.Host.CreateSnapshot(ctx, o.Disk, ownerTag())
			return err
		})
	}
	if o.Quiesce == nil {
		return snap, take(ctx)
	}
	q, err := quiesce.Run(ctx, *o.Quiesce, take)
	if err == nil && snap.Consistency == "" {
		snap.Consistency, snap.ConsistencyReason = q.Consistency, q.Reason
	}
	return snap, err
}

// retryBusy calls f until it returns anything but ErrBusy, backing off
// (10 ms, doubling up to a second, less jitter); when ctx ends first it
// returns f's last error (ErrBusy).
func retryBusy(ctx context.Context, f func() error) error {
	p := retry.Policy{Base: 10 * time.Millisecond, Max: time.Second}
	_, err := retry.Do(ctx, p, func(err error) bool { return errors.Is(err, ErrBusy) }, func(int) error { return f() })
	return err
}

func deleteSnapshot(ctx context.Context, o Options, id string) error {
	return DeleteSnapshot(ctx, o.Host, o.Disk, id)
}

// DeleteSnapshot deletes a snapshot, retrying while the host is busy: a
// reader's NBD connection may still be closing on the host's side.
func DeleteSnapshot(ctx context.Context, h Host, disk, id string) error {
	return retryBusy(ctx, func() error { return h.DeleteSnapshot(ctx, disk, id) })
}

// slotRun is a span of consecutive slots [first, first+n).
type slotRun struct{ first, n int64 }

// plan turns changed areas (sorted, as the host returns them) into runs
// of whole chunk slots, merged, each at most maxRun slots so one read stays
// a reasonable NBD request.
func plan(areas []Area, chunk, size int64) []slotRun {
	const maxRun = 64
	var spans [][2]int64
	for _, a := range areas {
		s0, s1 := a.Start/chunk, (min(a.Start+a.Length, size)+chunk-1)/chunk
		if k := len(spans); k > 0 && spans[k-1][1] >= s0 {
			spans[k-1][1] = max(spans[k-1][1], s1)
		} else if s1 > s0 {
			spans = append(spans, [2]int64{s0, s1})
		}
	}
	var out []slotRun
	for _, sp := range spans {
		for s := sp[0]; s < sp[1]; s += maxRun {
			out = append(out, slotRun{s, min(maxRun, sp[1]-s)})
		}
	}
	return out
}

// copier reads planned runs from a source and stores each chunk, with at
// most workers runs (≤ 4 MiB each) in memory at once. As the runs below
// some slot are all done it tells the prover (passed) and the writer
// (Done), which store and drop the tree's leaf groups and the index
// pages there.
type copier struct {
	src         Source
	w           *repo.SnapshotWriter
	chunk, size int64
	workers     int
	progress    func(done, total int64)
	prove       *prover // nil: no tree kept
	runs        []slotRun

	mu          sync.Mutex
	done, total int64
	finished    []bool // by run
	low         int    // runs[:low] are all finished
}

func (c *copier) run(ctx context.Context, runs []slotRun, read *int64) error {
	c.runs, c.finished = runs, make([]bool, len(runs))
	for _, r := range runs {
		c.total += min(r.n*c.chunk, c.size-r.first*c.chunk)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.workers)
	for i, r := range runs {
		g.Go(func() error {
			if err := c.copyRun(gctx, r); err != nil {
				return err
			}
			return c.finish(gctx, i)
		})
	}
	err := g.Wait()
	*read = c.done
	return err
}

// finish records run i as done and, when that completes every run below
// a higher slot than before, passes the slot to the writer's Done.
func (c *copier) finish(ctx context.Context, i int) error {
	c.mu.Lock()
	c.finished[i] = true
	old := c.low
	for c.low < len(c.runs) && c.finished[c.low] {
		c.low++
	}
	below := uint64((c.size + c.chunk - 1) / c.chunk)
	if c.low < len(c.runs) {
		below = uint64(c.runs[c.low].first)
	}
	advanced := c.low != old
	c.mu.Unlock()
	if !advanced {
		return nil
	}
	if c.prove != nil {
		if err := c.prove.passed(int64(below)); err != nil {
			return err
		}
	}
	return c.w.Done(ctx, below)
}

// runBufs recycles the buffers of runs of slots, backup's and restore's:
// PutChunk copies what it keeps and a restore has written a run when it
// is done with it, so neither allocates (and zeroes) every byte it moves.
// They are page-aligned, so a file target writes them around the page
// cache without a bounce copy.
var runBufs sync.Pool

func getRunBuf(n int64) []byte {
	if b, ok := runBufs.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		return (*b)[:n]
	}
	return fsutil.AlignedBuffer(int(n))[:n]
}

// minLend is the smallest run worth borrowing instead of copying: every
// lent run is unmapped after, and an unmap flushes the TLB of each core
// running the process. For the scattered 64 KiB runs of an incremental,
// those flushes cost more than the copy they save (measured: 7% of an
// incremental's CPU in smp_call_function_many_cond under munmap).
const minLend = 1 << 20

func (c *copier) copyRun(ctx context.Context, r slotRun) error {
	off := r.first * c.chunk
	n := min(r.n*c.chunk, c.size-off)
	if l, ok := c.src.(Lender); ok && n >= minLend {
		m, err := l.Lend(off, n)
		if err != nil {
			return fmt.Errorf("map %d+%d: %w", off, n, err)
		}
		if m != nil {
			return c.putLent(ctx, l, m, r.first, off)
		}
	}
	buf := getRunBuf(n)
	defer runBufs.Put(&buf)
	if err := c.src.ReadAt(ctx, buf, off); err != nil {
		return fmt.Errorf("read %d+%d: %w", off, len(buf), err)
	}
	return c.putRun(ctx, r.first, buf)
}

// putLent stores a lent run, then verifies that its bytes were the
// snapshot's all along. A fault on the mapping (its file truncated)
// becomes an error instead of killing the process.
func (c *copier) putLent(ctx context.Context, l Lender, m *fsutil.Mapping, first, off int64) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			// Only a fault on the mapping is the source's; anything else
			// (a nil dereference, say) is a bug and must not be hidden.
			if f, ok := p.(interface{ Addr() uintptr }); !ok || !m.Contains(f.Addr()) {
				panic(p)
			}
			err = fmt.Errorf("%w at %d+%d: %v", ErrSourceFault, off, len(m.Bytes), p)
		}
		err = errors.Join(err, m.Close())
	}()
	if err := c.putRun(ctx, first, m.Bytes); err != nil {
		return err
	}
	if err := l.Verify(); err != nil {
		return fmt.Errorf("read %d+%d: %w", off, len(m.Bytes), err)
	}
	return nil
}

// putRun stores the chunks of a run that starts at slot first. Progress
// counts each chunk as it is stored, not the run: a run is up to 4 MiB
// and the workers' runs, paced by the same uploads, end together, so a
// count by run moved the console's progress bar in one jump.
func (c *copier) putRun(ctx context.Context, first int64, buf []byte) error {
	for s := int64(0); s*c.chunk < int64(len(buf)); s++ {
		chunk := buf[s*c.chunk : min((s+1)*c.chunk, int64(len(buf)))]
		if err := c.w.PutChunk(ctx, uint64(first+s), chunk); err != nil {
			return err
		}
		c.advance(int64(len(chunk)))
	}
	if c.prove != nil {
		if err := c.prove.add(first*c.chunk, buf); err != nil {
			return err
		}
	}
	return nil
}

// advance counts n bytes stored and reports the total.
func (c *copier) advance(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done += n
	if c.progress != nil {
		c.progress(c.done, c.total)
	}
}

package backup

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/overlay"
)

// Recovery phases, kept in the overlay directory's recover.json.
const (
	// PhaseCopying: the new disk is being filled; the overlay holds
	// every guest write and is the truth.
	PhaseCopying = "copying"
	// PhaseSwitched: the new disk holds everything (flushed) and is the
	// truth; the overlay is stale and gets deleted.
	PhaseSwitched = "switched"
)

// ErrNoRecovery: the overlay directory holds no recovery to resume.
var ErrNoRecovery = errors.New("no recovery in progress in this overlay directory")

const (
	recoverStateName  = "recover.json"
	recoverCopiedName = "recover.copied"
)

// RecoverState is what recover keeps beside the overlay, so --resume
// knows the disk and whether the switch happened (written atomically).
type RecoverState struct {
	Format int    `json:"format"`
	Point  string `json:"point"`
	Disk   string `json:"disk"`
	Phase  string `json:"phase"`
	// Policy: a host recovery's point is in this policy's repository
	// (internal/recovery; "" the host's --points-repo or the CLI's).
	Policy string `json:"policy,omitempty"`
}

// LoadRecoverState reads dir's recovery state (ErrNoRecovery: none).
func LoadRecoverState(dir string) (*RecoverState, error) {
	b, err := os.ReadFile(filepath.Join(dir, recoverStateName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoRecovery)
	} else if err != nil {
		return nil, err
	}
	var st RecoverState
	if err := json.Unmarshal(b, &st); err != nil || st.Format != 1 {
		return nil, fmt.Errorf("%s: %w: %v", recoverStateName, overlay.ErrCorrupt, err)
	}
	return &st, nil
}

// SaveRecoverState replaces dir's recovery state durably.
func SaveRecoverState(dir string, st RecoverState) error {
	st.Format = 1
	b, _ := json.Marshal(st)
	return fsutil.WriteAtomic(filepath.Join(dir, recoverStateName), b)
}

// RemoveRecoverState ends a recovery whose overlay is gone.
func RemoveRecoverState(dir string) error {
	for _, n := range []string{recoverCopiedName, recoverStateName} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return fsutil.SyncDir(dir)
}

// NewSwitchedExport serves a recovery that has switched already (resumed
// in PhaseSwitched): every request goes to target.
func NewSwitchedExport(base *PointExport, target Target) *WritableExport {
	return &WritableExport{base: base, cs: base.cs, target: target}
}

// RecoverOptions of a recovery.
type RecoverOptions struct {
	Export *WritableExport
	// Target is the new disk. Where recover has never written it must
	// read as zeroes (a new disk), so zero chunks are skipped.
	Target  Target
	Workers int
	// Progress hears of the bytes of the first pass done, out of the
	// disk's size; calls never overlap.
	Progress func(done, total int64)
	// Checkpoint is how often the chunks copied so far are recorded (after
	// flushing the target), so a resumed recovery skips them (default 2 s).
	Checkpoint time.Duration
	// Rate bounds the first pass's reading, in bytes per second (0: no
	// bound), to leave the repository's and the host's bandwidth to the
	// running VM.
	Rate int64
}

// RecoverResult describes a finished recovery.
type RecoverResult struct {
	Copied    int64 // chunks written to the new disk in the first pass
	Resumed   int64 // chunks a checkpoint showed copied already
	Rewritten int64 // chunks the guest wrote after their copy, copied again
	Passes    int   // passes over written chunks before the switch
	Duration  time.Duration
}

// Recover copies the export's current view into the new disk while the
// guest keeps using the export, then switches the export over to the new
// disk without the client reconnecting, and deletes the overlay.
//
// Never losing a guest write (docs/overlay.md, R1-R4): the overlay stays
// the truth until the new disk holds everything, flushed, and the switch
// is recorded; a chunk holding overlay blocks goes to the new disk only
// after the overlay is synced, so a resumed recovery copies it again; a
// failure stops the copy and leaves the export serving from the overlay.
func Recover(ctx context.Context, o RecoverOptions) (*RecoverResult, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Checkpoint <= 0 {
		o.Checkpoint = 2 * time.Second
	}
	e := o.Export
	if e.ov == nil || e.Switched() {
		return nil, fmt.Errorf("recover: the export has switched already")
	}
	e.trackDirty()
	r := &recovery{o: o, e: e, res: &RecoverResult{}, slots: uint64((e.Size() + e.cs - 1) / e.cs)}
	r.copied = loadCopied(e.ov.Dir(), r.slots)
	r.last, r.start = time.Now(), time.Now()
	if err := r.firstPass(ctx); err != nil {
		return r.res, fmt.Errorf("recover: %w", err)
	}
	for r.res.Passes < 8 {
		d := e.dirtySlots()
		if len(d) <= 16 {
			break
		}
		r.res.Passes++
		if err := r.copyList(ctx, d); err != nil {
			return r.res, fmt.Errorf("recover: pass %d: %w", r.res.Passes, err)
		}
	}
	if err := r.switchOver(ctx); err != nil {
		return r.res, fmt.Errorf("recover: switch: %w", err)
	}
	r.res.Duration = time.Since(start)
	dir := e.ov.Dir()
	if err := errors.Join(e.ov.Remove(), os.Remove(filepath.Join(dir, recoverCopiedName))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return r.res, fmt.Errorf("recover: switched, but removing the overlay: %w", err)
	}
	return r.res, nil
}

type recovery struct {
	o     RecoverOptions
	e     *WritableExport
	res   *RecoverResult
	slots uint64

	mu     sync.Mutex // copied, last, res counters
	copied []byte     // bit per slot: on the new disk as of the last pass
	last   time.Time  // last checkpoint
	start  time.Time
	paced  int64 // bytes the rate has let through
}

// firstPass copies every slot not recorded as copied by an earlier run
// (or written since: a slot with overlay blocks is always copied).
func (r *recovery) firstPass(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Workers)
	report := progressReporter(r.o.Progress, r.e.Size())
	for first := uint64(0); first < r.slots; first += runSlots {
		n := min(runSlots, r.slots-first)
		g.Go(func() error {
			if r.resumed(first, n) { // nothing to load: a resume skips it whole
				report(r.runLen(first, int(n)))
				return nil
			}
			if err := r.pace(gctx, r.runLen(first, int(n))); err != nil {
				return err
			}
			if err := r.copyRun(gctx, first, int(n), true); err != nil {
				return err
			}
			report(r.runLen(first, int(n)))
			return r.maybeCheckpoint(gctx)
		})
	}
	return g.Wait()
}

// resumed reports whether every slot of the run is recorded as copied
// and holds no overlay block (R3), counting them as resumed if so.
func (r *recovery) resumed(first, n uint64) bool {
	e := r.e
	for s := first; s < first+n; s++ {
		b0 := uint64(int64(s) * e.cs / overlay.BlockSize)
		if !r.isCopied(s) || e.ov.AnyPresent(b0, min(uint64(e.cs/overlay.BlockSize), e.ov.Blocks()-b0)) {
			return false
		}
	}
	r.mu.Lock()
	r.res.Resumed += int64(n)
	r.mu.Unlock()
	return true
}

// pace waits until Rate lets n more bytes through.
func (r *recovery) pace(ctx context.Context, n int64) error {
	if r.o.Rate <= 0 {
		return nil
	}
	r.mu.Lock()
	r.paced += n
	due := r.start.Add(time.Duration(float64(r.paced-n) / float64(r.o.Rate) * float64(time.Second)))
	r.mu.Unlock()
	t := time.NewTimer(time.Until(due))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// copyList copies the given slots (sorted) again, in runs.
func (r *recovery) copyList(ctx context.Context, slots []uint64) error {
	for i := 0; i < len(slots); {
		j := i + 1
		for j < len(slots) && slots[j] == slots[j-1]+1 && j-i < runSlots {
			j++
		}
		if err := r.copyRun(ctx, slots[i], j-i, false); err != nil {
			return err
		}
		r.mu.Lock()
		r.res.Rewritten += int64(j - i)
		r.mu.Unlock()
		i = j
	}
	return nil
}

// switchOver stops every request, copies what was written last, flushes
// the new disk, records the switch and points the export at the disk.
func (r *recovery) switchOver(ctx context.Context) error {
	e := r.e
	e.sw.Lock()
	defer e.sw.Unlock()
	if err := r.copyList(ctx, e.dirtySlots()); err != nil {
		return err
	}
	if err := r.o.Target.Flush(ctx); err != nil {
		return fmt.Errorf("flush the new disk: %w", err)
	}
	st, err := LoadRecoverState(e.ov.Dir())
	if err != nil {
		return err
	}
	st.Phase = PhaseSwitched
	if err := SaveRecoverState(e.ov.Dir(), *st); err != nil {
		return err
	}
	e.target = r.o.Target
	e.dirty.Store(nil)
	return nil
}

// copyRun copies slots [first, first+n) to the new disk: the point's
// chunks, loaded together, with the overlay's blocks merged in under each
// chunk's stripe (clearing its dirty bit, so a later write marks it
// again). Chunks holding overlay blocks are written only after the
// overlay is synced (R2). skipCopied skips slots a checkpoint recorded
// that hold no overlay block.
func (r *recovery) copyRun(ctx context.Context, first uint64, n int, skipCopied bool) error {
	e, cs := r.e, r.e.cs
	buf := getRunBuf(r.runLen(first, n)) // every slot is decoded or cleared below
	defer runBufs.Put(&buf)
	zero, err := e.base.im.ReadChunks(ctx, first, n, buf)
	if err != nil {
		return fmt.Errorf("read the point at %d: %w", int64(first)*cs, err)
	}
	todo, overlaid := make([]bool, n), false
	for i := range n {
		s := first + uint64(i)
		q := buf[int64(i)*cs : min(int64(i+1)*cs, int64(len(buf)))]
		if zero[i] {
			clear(q)
		}
		b0, nb := uint64(int64(s)*cs/overlay.BlockSize), uint64((int64(len(q))+overlay.BlockSize-1)/overlay.BlockSize)
		if skipCopied && r.isCopied(s) && !e.ov.AnyPresent(b0, nb) {
			r.count(&r.res.Resumed)
			continue
		}
		unlock := e.lockChunks(int64(s)*cs, cs)
		e.takeDirty(s)
		var err error
		if e.ov.AnyPresent(b0, nb) {
			zero[i], overlaid = false, true
			err = r.merge(q, int64(s)*cs)
		}
		unlock()
		if err != nil {
			return err
		}
		todo[i] = !zero[i] // the new disk reads as zeroes where never written
	}
	if overlaid {
		if err := e.ov.Sync(); err != nil {
			return fmt.Errorf("sync the overlay: %w", err)
		}
	}
	if err := r.write(ctx, first, buf, todo); err != nil {
		return err
	}
	r.markCopied(first, n)
	return nil
}

// runLen is the byte length of slots [first, first+n).
func (r *recovery) runLen(first uint64, n int) int64 {
	return min(int64(n)*r.e.cs, r.e.Size()-int64(first)*r.e.cs)
}

// merge copies the overlay's present blocks of the chunk at off into q.
func (r *recovery) merge(q []byte, off int64) error {
	for p := int64(0); p < int64(len(q)); p += overlay.BlockSize {
		if r.e.ov.Present(uint64((off + p) / overlay.BlockSize)) {
			if err := r.e.ov.ReadAt(q[p:min(p+overlay.BlockSize, int64(len(q)))], off+p); err != nil {
				return fmt.Errorf("read the overlay at %d: %w", off+p, err)
			}
		}
	}
	return nil
}

// write sends the todo slots of a run to the new disk, a stretch of
// consecutive ones per call.
func (r *recovery) write(ctx context.Context, first uint64, buf []byte, todo []bool) error {
	cs := r.e.cs
	for i := 0; i < len(todo); {
		if !todo[i] {
			i++
			continue
		}
		j := i + 1
		for j < len(todo) && todo[j] {
			j++
		}
		off := (int64(first) + int64(i)) * cs
		if err := r.o.Target.WriteAt(ctx, buf[int64(i)*cs:min(int64(j)*cs, int64(len(buf)))], off); err != nil {
			return fmt.Errorf("write the new disk at %d: %w", off, err)
		}
		r.mu.Lock()
		r.res.Copied += int64(j - i)
		r.mu.Unlock()
		i = j
	}
	return nil
}

func (r *recovery) count(v *int64) {
	r.mu.Lock()
	*v++
	r.mu.Unlock()
}

func (r *recovery) isCopied(s uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.copied[s/8]&(1<<(s%8)) != 0
}

func (r *recovery) markCopied(first uint64, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := first; s < first+uint64(n); s++ {
		r.copied[s/8] |= 1 << (s % 8)
	}
}

// maybeCheckpoint records the copied slots every Checkpoint: the bitmap
// is taken first, then the new disk flushed, so every slot it names is
// durable there (R3).
func (r *recovery) maybeCheckpoint(ctx context.Context) error {
	r.mu.Lock()
	if time.Since(r.last) < r.o.Checkpoint {
		r.mu.Unlock()
		return nil
	}
	r.last = time.Now()
	snap := append([]byte(nil), r.copied...)
	r.mu.Unlock()
	if err := r.o.Target.Flush(ctx); err != nil {
		return fmt.Errorf("flush the new disk: %w", err)
	}
	return saveCopied(r.e.ov.Dir(), snap)
}

// The copied file: the bitmap, then its CRC-32C (u32 LE). A damaged or
// missing one means nothing is known to be copied.
func saveCopied(dir string, bm []byte) error {
	return fsutil.WriteAtomic(filepath.Join(dir, recoverCopiedName), binary.LittleEndian.AppendUint32(bm, crc32.Checksum(bm, castagnoli)))
}

func loadCopied(dir string, slots uint64) []byte {
	n := int((slots + 7) / 8)
	b, err := os.ReadFile(filepath.Join(dir, recoverCopiedName))
	if err != nil || len(b) != n+4 || crc32.Checksum(b[:n], castagnoli) != binary.LittleEndian.Uint32(b[n:]) {
		return make([]byte, n)
	}
	return b[:n]
}

// RecoverProgress is what a running recovery last reported, kept in the
// overlay directory's recover.progress (replaced by rename, not synced:
// it is a report, not state) for `recover --status`.
type RecoverProgress struct {
	Point    string    `json:"point"`
	Disk     string    `json:"disk"`
	Phase    string    `json:"phase"` // copying, switched, stopped
	Done     int64     `json:"done"`
	Total    int64     `json:"total"`
	RateBps  int64     `json:"rate_bytes_per_second"`
	ETA      float64   `json:"eta_seconds"`
	Error    string    `json:"error,omitempty"`
	PID      int       `json:"pid"`
	Updated  time.Time `json:"updated"`
	Finished bool      `json:"finished"`
}

// PhaseStopped: the copy failed; the export serves from the overlay.
const PhaseStopped = "stopped"

const recoverProgressName = "recover.progress"

// SaveRecoverProgress replaces dir's progress report.
func SaveRecoverProgress(dir string, p RecoverProgress) error {
	b, _ := json.Marshal(p)
	tmp := filepath.Join(dir, "."+recoverProgressName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, recoverProgressName))
}

// LoadRecoverProgress reads dir's progress report (ErrNoRecovery: none).
func LoadRecoverProgress(dir string) (*RecoverProgress, error) {
	b, err := os.ReadFile(filepath.Join(dir, recoverProgressName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoRecovery)
	} else if err != nil {
		return nil, err
	}
	var p RecoverProgress
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", recoverProgressName, overlay.ErrCorrupt, err)
	}
	return &p, nil
}

package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/repo"
)

// Target receives a restored image. Safe for concurrent use.
type Target interface {
	WriteAt(ctx context.Context, p []byte, off int64) error
	ReadAt(ctx context.Context, p []byte, off int64) error
	// Zero makes a range read as zeroes (skipped when the target is known
	// to be zero already).
	Zero(ctx context.Context, off, n int64) error
	Flush(ctx context.Context) error
	Size() int64
}

// RestoreOptions of a restore.
type RestoreOptions struct {
	Repo     *repo.Repository
	Manifest repo.ID
	Target   Target
	// TargetIsZero: the target reads as zeroes already (a new disk or
	// file), so zero slots are skipped rather than written.
	TargetIsZero bool
	Workers      int
	// ReadBack reads every written chunk back from the target and compares
	// it (CRC-32C) after the flush: it catches a target that loses or
	// corrupts writes, at the cost of a second pass over the data. Chunks
	// are always verified against their keyed hash as they leave the
	// repository.
	ReadBack bool
	// Progress, when set, hears of the bytes of the image written (or
	// skipped as zero) so far, out of its size; calls never overlap.
	Progress func(done, total int64)
	// Partial restores only the chunk slots that Areas touch (sorted, as
	// a host returns changed areas; none: nothing is written); the rest
	// of the target keeps its bytes. Rollback uses it.
	Partial bool
	Areas   []Area
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Manifest     *repo.Manifest
	BytesWritten int64
	ZeroSlots    int64
	Verified     int64 // chunks read back from the target and compared
	// RootVerified: with ReadBack, the restored image was hashed whole
	// and has the point's root; for a rollback or a clone restore, a
	// snapshot of the disk written has it by the host's hash tree (false
	// for a point without a root, or a host without trees).
	RootVerified bool
	Duration     time.Duration
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Restore writes a restore point to a target. Each chunk is verified
// against its keyed hash when it leaves the repository and, with ReadBack,
// against what was written once it has landed. A target smaller than the
// image is refused. It holds a shared lock, so a prune cannot remove the
// packs it reads (the prune waits or fails with repo.ErrLocked).
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = 4
	}
	lock, err := o.Repo.LockRead(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	// A lock file that cannot be removed only delays a prune until it
	// expires; the image is restored all the same.
	defer lock.KeepFresh(ctx)()
	im, err := o.Repo.OpenImage(ctx, o.Manifest)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Manifest: im.Manifest()}
	if o.Target.Size() < im.Size() {
		return nil, fmt.Errorf("restore: target has %d bytes, the image %d", o.Target.Size(), im.Size())
	}
	sums, err := writeSlots(ctx, o, im, res)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := o.Target.Flush(ctx); err != nil {
		return nil, fmt.Errorf("restore: flush: %w", err)
	}
	if o.ReadBack {
		if err := verifySlots(ctx, o, im, sums, res); err != nil {
			return nil, fmt.Errorf("restore: verify: %w", err)
		}
		if err := verifyRoot(ctx, o, im.Manifest(), res); err != nil {
			return nil, fmt.Errorf("restore: verify: %w", err)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// runSlots is how many slots one restore worker reads at once (4 MiB).
const runSlots = 64

// writeSlots copies every slot, a run of slots per worker so the
// repository can fetch neighbouring chunks together; with ReadBack it
// returns the CRC-32C of each chunk written (0 for zero slots).
func writeSlots(ctx context.Context, o RestoreOptions, im *repo.Image, res *RestoreResult) (*slotSums, error) {
	cs := int64(im.ChunkSize())
	runs := restoreRuns(o, cs, im.Size())
	var sums *slotSums
	if o.ReadBack {
		sums = newSlotSums(runs)
	}
	var total int64
	for _, r := range runs {
		total += min(r.n*cs, im.Size()-r.first*cs)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	report := progressReporter(o.Progress, total)
	for _, r := range runs {
		g.Go(func() error {
			err := writeRun(gctx, o, im, r.first, r.n, sums, res)
			report(min(r.n*cs, im.Size()-r.first*cs))
			return err
		})
	}
	return sums, g.Wait()
}

// restoreRuns is every slot in runs of runSlots or, for a partial
// restore, only the slots its areas touch (plan's runs, at most as long).
func restoreRuns(o RestoreOptions, cs, size int64) []slotRun {
	if o.Partial {
		return plan(o.Areas, cs, size)
	}
	var runs []slotRun
	slots := (size + cs - 1) / cs
	for first := int64(0); first < slots; first += runSlots {
		runs = append(runs, slotRun{first, min(runSlots, slots-first)})
	}
	return runs
}

// restoredSlots calls fn for every slot the restore wrote: all of them
// or, for a partial restore, only those in its runs, so reading back a
// rollback of a few chunks does not walk the whole image's index.
func restoredSlots(ctx context.Context, o RestoreOptions, im *repo.Image, runs []slotRun, fn func(slot uint64, zero bool) error) error {
	if !o.Partial {
		return im.Slots(ctx, fn)
	}
	for _, r := range runs {
		for s := uint64(r.first); s < uint64(r.first+r.n); s++ {
			zero, err := im.IsZero(ctx, s)
			if err != nil {
				return err
			}
			if err := fn(s, zero); err != nil {
				return err
			}
		}
	}
	return nil
}

// slotSums holds a CRC-32C for each slot of a restore's runs (sorted and
// disjoint, as restoreRuns makes them): 4 bytes a restored slot, so a
// rollback of a few chunks of a large disk keeps a few entries, not one
// per slot of the image.
type slotSums struct {
	runs []slotRun
	base []int64 // base[i]: where runs[i]'s sums start in v
	v    []uint32
}

func newSlotSums(runs []slotRun) *slotSums {
	s := &slotSums{runs: runs, base: make([]int64, len(runs))}
	var n int64
	for i, r := range runs {
		s.base[i] = n
		n += r.n
	}
	s.v = make([]uint32, n)
	return s
}

// at returns the place of slot's sum; slot must lie in one of the runs.
func (s *slotSums) at(slot uint64) *uint32 {
	i := sort.Search(len(s.runs), func(i int) bool { return uint64(s.runs[i].first+s.runs[i].n) > slot })
	return &s.v[s.base[i]+int64(slot)-s.runs[i].first]
}

// progressReporter adds up what the workers report and passes the total
// to fn, one call at a time.
func progressReporter(fn func(done, total int64), total int64) func(n int64) {
	if fn == nil {
		return func(int64) {}
	}
	var mu sync.Mutex
	var done int64
	return func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		fn(done, total)
	}
}

// writeRun decodes a run of slots into one buffer and writes each stretch
// of consecutive data slots with one call.
func writeRun(ctx context.Context, o RestoreOptions, im *repo.Image, first, n int64, sums *slotSums, res *RestoreResult) error {
	cs := int64(im.ChunkSize())
	off0 := first * cs
	buf := getRunBuf(min(n*cs, im.Size()-off0))
	defer runBufs.Put(&buf)
	zero, err := im.ReadChunks(ctx, uint64(first), int(n), buf)
	if err != nil {
		off := off0
		var se *repo.SlotError
		if errors.As(err, &se) {
			off = int64(se.Slot) * cs
		}
		return fmt.Errorf("restore point %s, chunk at offset %d: %w", im.Manifest().ID.Short(), off, err)
	}
	for i := int64(0); i < n; {
		j := i + 1
		for j < n && zero[j] == zero[i] {
			j++
		}
		lo, hi := i*cs, min(j*cs, int64(len(buf)))
		if err := writeStretch(ctx, o, im, buf[lo:hi], off0+lo, zero[i], res); err != nil {
			return err
		}
		if o.ReadBack && !zero[i] {
			for s := i; s < j; s++ {
				*sums.at(uint64(first + s)) = crc32.Checksum(buf[s*cs:min((s+1)*cs, int64(len(buf)))], castagnoli)
			}
		}
		i = j
	}
	return nil
}

// writeStretch writes data slots, or zeroes zero slots unless the target
// is known to be zero.
func writeStretch(ctx context.Context, o RestoreOptions, im *repo.Image, p []byte, off int64, zero bool, res *RestoreResult) error {
	cs := int64(im.ChunkSize())
	if zero {
		atomic.AddInt64(&res.ZeroSlots, (int64(len(p))+cs-1)/cs)
		if o.TargetIsZero {
			return nil
		}
		return o.Target.Zero(ctx, off, int64(len(p)))
	}
	atomic.AddInt64(&res.BytesWritten, int64(len(p)))
	return o.Target.WriteAt(ctx, p, off)
}

func verifySlots(ctx context.Context, o RestoreOptions, im *repo.Image, sums *slotSums, res *RestoreResult) error {
	cs := int64(im.ChunkSize())
	runs := restoreRuns(o, cs, im.Size())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	zero := make([]byte, cs)
	err := restoredSlots(gctx, o, im, runs, func(slot uint64, isZero bool) error {
		if isZero && o.TargetIsZero {
			return nil // never written: the target was zero to begin with
		}
		g.Go(func() error {
			off := int64(slot) * cs
			buf := make([]byte, min(cs, im.Size()-off))
			if err := o.Target.ReadAt(gctx, buf, off); err != nil {
				return err
			}
			ok := (isZero && bytes.Equal(buf, zero[:len(buf)])) || (!isZero && crc32.Checksum(buf, castagnoli) == *sums.at(slot))
			if !ok {
				return fmt.Errorf("chunk at %d differs from the restore point after writing", off)
			}
			atomic.AddInt64(&res.Verified, 1)
			return nil
		})
		return gctx.Err()
	})
	// A worker's error is the cause; the iterator's is then only the
	// cancellation it triggered.
	if werr := g.Wait(); werr != nil {
		err = werr
	}
	return err
}

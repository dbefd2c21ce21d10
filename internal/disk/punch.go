package disk

import (
	"context"
	"slices"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/blockwise/blockwise/internal/vfs"
)

// A consolidation gives the child's space back while it goes, instead of
// in one truncation at its end: on a file system mounted with `discard`
// that truncation was most of the task's time (1.25 s of 2 s for 256 MiB,
// docs/performance.md). Invariant 13 (docs/format.md):
//
//   - a grain of the child is punched only once a flush has made its move
//     durable (the parent's data synced, the record of the child's drop and
//     the parent's gain synced), so after a crash the child's map never
//     names a punched grain;
//   - a reader that resolved a grain to the child, then read it, re-checks
//     the child's map (layer.punching): a grain the child no longer holds
//     may have been punched after the read chose it, so it is read again
//     through the chain (from the parent). A reader holding the grain
//     locks needs no re-check: a move takes them, and only moved grains
//     are punched;
//   - a child shared with a linked clone (more than one link) keeps its
//     data (invariant 10), as it does at the end.
//
// The punching runs beside the merge in its own goroutine, so the file
// system's freeing overlaps the copying; the end stops it and truncates
// what is left.

// punchBatchBytes: the grains moved before one flush are handed to the
// puncher together; a batch costs at most one flush of its own (none when
// a guest flush ran meanwhile). Small merges hand off in eighths, so that
// the tests' small disks punch too.
const punchBatchBytes = 16 << 20

// punchStepBytes bounds one FALLOC_FL_PUNCH_HOLE call, and so what a
// guest write into the (live) child waits for on the file's inode lock.
const punchStepBytes = 1 << 20

// punchBatch is grains the merge dropped from the child, and the count of
// flush cuts taken when the last of them was dropped: a flush whose cut
// comes after it records them all.
type punchBatch struct {
	grains *roaring.Bitmap
	cut    uint64
}

// puncher gives the child's space back behind the merge (invariant 13).
type puncher struct {
	ch     chan punchBatch
	cancel context.CancelFunc
	done   chan struct{}
	batch  uint64          // grains per hand-off
	moved  *roaring.Bitmap // dropped since the last hand-off (merge goroutine only)
}

// startPuncher starts punching the child of ms, or returns nil when its
// file is shared.
func (d *Disk) startPuncher(ctx context.Context, ms *mergeState) *puncher {
	if vfs.Links(ms.child.f) > 1 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &puncher{ch: make(chan punchBatch, 2), cancel: cancel, done: make(chan struct{}),
		batch: uint64(clampInt(ms.total/8, 1, punchBatchBytes/d.grain)), moved: roaring.New()}
	go func() {
		defer close(p.done)
		d.punchLoop(ctx, ms.child, p.ch)
	}()
	return p
}

func clampInt(x, lo, hi int64) int64 { return max(lo, min(x, hi)) }

// stop ends the punching and waits for it: nil-safe, idempotent.
func (p *puncher) stop() {
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

// note records grains [g0, g1) as dropped from the child. Merge goroutine.
func (p *puncher) note(g0, g1 uint64) {
	if p != nil {
		p.moved.AddRange(g0, g1)
	}
}

// handOff gives the grains dropped so far to the puncher once they make a
// batch; a busy puncher leaves them to the next hand-off. Merge goroutine,
// after a step (its drops are done: any later cut takes them).
func (d *Disk) handOff(p *puncher) {
	if p == nil || p.moved.GetCardinality() < p.batch {
		return
	}
	select {
	case p.ch <- punchBatch{grains: p.moved, cut: d.cuts.Load()}:
		p.moved = roaring.New()
		if d.afterHandOff != nil {
			d.afterHandOff()
		}
	default:
	}
}

// punchLoop punches each batch once its drops are durable. Best effort:
// the first failure stops it, and the end's truncation frees the rest.
func (d *Disk) punchLoop(ctx context.Context, l *layer, ch <-chan punchBatch) {
	for {
		var b punchBatch
		select {
		case <-ctx.Done():
			return
		case b = <-ch:
		}
		if d.durableCut.Load() <= b.cut {
			if err := d.Flush(); err != nil {
				return
			}
		}
		l.punching.Store(true) // before the first punch: readers re-check from now
		if err := punchGrains(ctx, l.f, b.grains, d.grain); err != nil {
			return
		}
	}
}

// punchGrains punches the runs of bm in steps of at most punchStepBytes.
func punchGrains(ctx context.Context, f vfs.File, bm *roaring.Bitmap, grain int64) error {
	step := max(punchStepBytes/grain, 1)
	it := bm.Iterator()
	var a, b int64 = -1, -1 // the run being gathered: grains [a, b)
	flush := func() error {
		if a < 0 {
			return nil
		}
		err := vfs.PunchHole(f, a*grain, (b-a)*grain)
		a, b = -1, -1
		return err
	}
	for it.HasNext() {
		if err := ctx.Err(); err != nil {
			return err
		}
		g := int64(it.Next())
		if g == b && b-a < step {
			b++
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		a, b = g, g+1
	}
	return flush()
}

// noteDurable records that the flush of cut is durable: every drop made
// before that cut was taken is recorded and synced (or was in an earlier
// durable flush or checkpoint).
func (d *Disk) noteDurable(cut uint64) {
	for {
		old := d.durableCut.Load()
		if old >= cut || d.durableCut.CompareAndSwap(old, cut) {
			return
		}
	}
}

// holds reports whether l still holds grains [g0, g1) present: a reader
// that read them from l's file while l is punched checks this after the
// read (invariant 13).
func (l *layer) holds(g0, g1 uint64) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.present.CardinalityInRange(g0, g1) == g1-g0
}

// movedUnder reports whether a read of grains [g0, g1) from chain[src]
// may have met a punched hole: the layer is being punched and no longer
// holds them all. The caller then reads them again through the chain.
func movedUnder(chain []*layer, src int, g0, g1 uint64) bool {
	l := chain[src]
	return src > 0 && l.punching.Load() && !l.holds(g0, g1)
}

// punches reports whether chain holds the child of a consolidation, whose
// grains may be punched once moved. Shared barrier held (d.merge is set
// and cleared under the exclusive one).
func (d *Disk) punches(chain []*layer) bool {
	return d.merge != nil && slices.Contains(chain, d.merge.child)
}

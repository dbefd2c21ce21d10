package disk

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// reclaimUnit is the span one reclaim step examines under its grain
// locks: VMFS unmaps in 1 MiB units, and a guest write waits at most for
// one such step.
const reclaimUnit = 1 << 20

// Reclaim starts a background scan of the live layer that gives back the
// space of allocated grains holding only zeroes (thin reclaim: what a
// guest that zero-fills instead of trimming leaves behind). In the flat
// layer of a disk without snapshots such a grain is punched; in the live
// delta it is punched and marked zero, so it still hides the layers
// below; frozen layers are never touched. Content does not change, so
// CBT records nothing. rate bounds the bytes examined per second (0:
// unbounded). A thick disk is ErrInvalid (its space stays reserved); a
// reclaim already running is ErrBusy. The task stops when the disk
// closes.
//
// Invariant 9 (docs/format.md).
func (d *Disk) Reclaim(rate int64) (*Task, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.thick() {
		return nil, fmt.Errorf("%w: disk is %s: its space stays reserved", ErrInvalid, d.meta.Provision)
	}
	if rate < 0 {
		return nil, fmt.Errorf("%w: rate %d", ErrInvalid, rate)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.mu.reclaim; t != nil {
		select {
		case <-t.done:
		default:
			return nil, fmt.Errorf("%w: a reclaim is running", ErrBusy)
		}
	}
	t := &Task{total: d.size, done: make(chan struct{})}
	d.mu.reclaim = t
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		t.err = d.runReclaim(d.ctx, t, rate)
		close(t.done)
	}()
	return t, nil
}

// Reclaimed is the bytes a reclaim task gave back so far.
func (t *Task) Reclaimed() int64 { return t.reclaimed.Load() }

func (d *Disk) runReclaim(ctx context.Context, t *Task, rate int64) error {
	start := time.Now()
	var examined int64
	for off := int64(0); ; off += reclaimUnit {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reclaim stopped: %w", err)
		}
		n, freed, more, err := d.reclaimStep(off)
		if err != nil {
			return noSpace(err)
		}
		examined += n
		t.reclaimed.Add(freed)
		t.merged.Store(min(off+reclaimUnit, t.total))
		if !more {
			t.merged.Store(t.total)
			return nil
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(examined) / float64(rate) * float64(time.Second)))
			sleepCtx(ctx, time.Until(due))
		}
	}
}

// reclaimStep examines [off, off+reclaimUnit) of the live layer: it
// returns the bytes read, the bytes given back and whether the disk goes
// on past it.
//
// A flat layer's writes take no grain locks (they need none), so a step
// over a disk without snapshots holds the barrier exclusively instead:
// else a write landing between the step's read and its punch would be
// punched away. A delta's writes take the grain locks the step holds.
func (d *Disk) reclaimStep(off int64) (int64, int64, bool, error) {
	d.barrier.RLock()
	flat := len(d.chain) == 1
	d.barrier.RUnlock()
	if flat {
		d.barrier.Lock()
		defer d.barrier.Unlock()
	} else {
		d.barrier.RLock()
		defer d.barrier.RUnlock()
		if len(d.chain) == 1 { // consolidated meanwhile: this unit is skipped
			return 0, 0, true, nil
		}
	}
	if d.closed {
		return 0, 0, false, ErrClosed
	}
	if off >= d.size {
		return 0, 0, false, nil
	}
	if d.merge != nil && d.merge.live {
		return 0, 0, true, nil // the live layer is being merged: skip this unit
	}
	n := min(int64(reclaimUnit), d.size-off)
	g0, g1 := d.grains(off, n)
	unlock := d.lockGrains(g0, g1)
	defer unlock()
	top := d.chain[len(d.chain)-1]
	var read, freed int64
	for _, r := range d.reclaimCandidates(top, off, n) {
		buf := make([]byte, r[1]-r[0])
		if err := fsutil.ReadFull(top.f, buf, r[0]); err != nil {
			return read, freed, true, err
		}
		read += int64(len(buf))
		if d.afterReclaimRead != nil {
			d.afterReclaimRead()
		}
		// Consecutive zero grains are punched as one range: a punch is a
		// file-system transaction (XFS), not a per-grain cost to pay.
		z0 := int64(-1)
		for a := r[0]; ; a += d.grain {
			end := a >= r[1]
			if !end && allZero(buf[a-r[0]:min(a+d.grain, r[1])-r[0]]) {
				if z0 < 0 {
					z0 = a
				}
				continue
			}
			if z0 >= 0 {
				b := min(a, r[1])
				if err := d.reclaimRange(top, z0, b); err != nil {
					return read, freed, true, err
				}
				freed += b - z0
				z0 = -1
			}
			if end {
				break
			}
		}
	}
	return read, freed, true, nil
}

// reclaimRange gives back [a, b) of the live layer, which reads zeroes.
func (d *Disk) reclaimRange(top *layer, a, b int64) error {
	b = min(b, d.size)
	if err := vfs.PunchHole(top.f, a, b-a); err != nil {
		return err
	}
	top.written.Store(true)
	if !top.flat {
		top.set(uint64(a/d.grain), uint64((b+d.grain-1)/d.grain), zeroed)
	}
	return nil
}

// reclaimCandidates lists the allocated runs of the live layer in
// [off, off+n), grain-aligned: a flat layer's data extents, a delta's
// present grains.
func (d *Disk) reclaimCandidates(top *layer, off, n int64) [][2]int64 {
	var out [][2]int64
	if top.flat {
		ext, err := vfs.Extents(top.f, off, n)
		if err != nil {
			return nil
		}
		for _, e := range ext {
			if !e.Data {
				continue
			}
			a := e.Off / d.grain * d.grain
			b := min((e.Off+e.Len+d.grain-1)/d.grain*d.grain, d.size)
			if k := len(out); k > 0 && out[k-1][1] >= a {
				out[k-1][1] = max(out[k-1][1], b)
			} else {
				out = append(out, [2]int64{a, b})
			}
		}
		return out
	}
	g0, g1 := d.grains(off, n)
	top.mu.RLock()
	in := roaring.New()
	in.AddRange(g0, g1)
	in.And(top.mu.present)
	top.mu.RUnlock()
	for _, g := range in.ToArray() {
		a := int64(g) * d.grain
		b := min(a+d.grain, d.size)
		if k := len(out); k > 0 && out[k-1][1] == a {
			out[k-1][1] = b
		} else {
			out = append(out, [2]int64{a, b})
		}
	}
	return out
}

// allZero reports whether p holds only zero bytes.
func allZero(p []byte) bool {
	for len(p) > 0 {
		c := min(len(p), len(zeroes))
		if !bytes.Equal(p[:c], zeroes[:c]) {
			return false
		}
		p = p[c:]
	}
	return true
}

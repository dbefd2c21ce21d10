package disk

import (
	"fmt"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// run is a span of grains [g0, g1) resolved to one layer of a chain.
type run struct {
	g0, g1 uint64
	src    int // index in the chain; 0 is the flat bottom
	st     int // present or zeroed
}

// resolve maps grains [g0, g1) of a chain to the layers that hold them,
// top-down. Caller holds the shared barrier.
func resolve(chain []*layer, g0, g1 uint64) []run {
	for _, l := range chain[1:] {
		l.mu.RLock()
	}
	defer func() {
		for _, l := range chain[1:] {
			l.mu.RUnlock()
		}
	}()
	var out []run
	for g := g0; g < g1; {
		r := run{g0: g, g1: g1, st: present}
		for i := len(chain) - 1; i >= 1; i-- {
			l := chain[i]
			if s := l.stateLocked(uint32(g)); s != absent {
				r.src, r.st = i, s
				r.g1 = clampEnd(r.g1, l.runEndLocked(uint32(g), s))
				break
			}
			r.g1 = clampEnd(r.g1, l.nextSetLocked(uint32(g)))
		}
		if r.g1 <= g {
			// A run always advances: a bitmap answering nonsense must cost
			// speed (one grain at a time), never an endless loop.
			r.g1 = g + 1
		}
		out = append(out, r)
		g = r.g1
	}
	return out
}

func clampEnd(end uint64, next int64) uint64 {
	if next >= 0 && uint64(next) < end {
		return uint64(next)
	}
	return end
}

func (d *Disk) grains(off, n int64) (uint64, uint64) {
	return uint64(off / d.grain), uint64((off + n + d.grain - 1) / d.grain)
}

// checkRange validates a request against size.
func checkRange(off, n, size int64) error {
	if off%Sector != 0 || n%Sector != 0 {
		return fmt.Errorf("%w: offset %d length %d", ErrMisaligned, off, n)
	}
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: offset %d length %d, size %d", ErrOutOfRange, off, n, size)
	}
	return nil
}

// readChain reads p at off through chain. Caller holds the shared barrier.
func (d *Disk) readChain(chain []*layer, p []byte, off int64) error {
	if len(chain) == 1 {
		return fsutil.ReadFull(chain[0].f, p, off)
	}
	end := off + int64(len(p))
	g0, g1 := d.grains(off, int64(len(p)))
	for _, r := range resolve(chain, g0, g1) {
		a := max(off, int64(r.g0)*d.grain)
		b := min(end, int64(r.g1)*d.grain)
		buf := p[a-off : b-off]
		if r.st == zeroed {
			clear(buf)
			continue
		}
		if err := fsutil.ReadFull(chain[r.src].f, buf, a); err != nil {
			return err
		}
	}
	return nil
}

// ReadAt reads len(p) bytes at off of the live disk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	if err := checkRange(off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	if err := d.readLive(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// beginWrite validates a write and records its change durably in CBT
// before any data moves. Caller holds the shared barrier.
func (d *Disk) beginWrite(off, n int64) error {
	if d.closed {
		return ErrClosed
	}
	if err := d.failed(); err != nil {
		return err
	}
	if err := checkRange(off, n, d.size); err != nil {
		return err
	}
	if d.tracker != nil {
		return d.tracker.Mark(off, n)
	}
	return nil
}

// WriteAt writes p at off of the live disk.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if err := d.beginWrite(off, int64(len(p))); err != nil {
		return 0, noSpace(err)
	}
	// Flat disks too take the grain locks: a compare-and-write must see
	// no write between its compare and its write (caw.go, invariant C1).
	unlock := d.lockGrains(d.grains(off, int64(len(p))))
	defer unlock()
	if len(d.chain) == 1 {
		// A write the file system has no room for fails here, before
		// anything describes it: the request fails, the disk stays whole.
		top := d.chain[0]
		top.written.Store(true) // a short write may have reached the file
		_, err := top.f.WriteAt(p, off)
		// Again after: a flush that cleared the flag while this write ran
		// may have synced before it landed; the next flush must sync it.
		top.written.Store(true)
		if err != nil {
			return 0, noSpace(err)
		}
		return len(p), nil
	}
	if err := d.writeGrains(p, off); err != nil {
		return 0, noSpace(err)
	}
	return len(p), nil
}

// lockGrains takes the stripe locks of grains [g0, g1) in stripe order.
// A stripe covers a stripeBytes region (the grains of one MiB), regions
// map to stripes modulo stripes, so the order is at most two ascending
// spans. Regions, not single grains, keep a large write to a few locks:
// with a stripe per grain a 1 MiB write held a quarter of them, and a
// compare-and-write elsewhere on the disk waited behind every write in
// flight (TestCompareAndWriteLatency).
func (d *Disk) lockGrains(g0, g1 uint64) func() {
	spans := d.stripeSpans(g0, g1)
	for _, s := range spans {
		for i := s.a; i < s.b; i++ {
			d.stripe[i].Lock()
		}
	}
	return func() {
		for _, s := range spans {
			for i := s.a; i < s.b; i++ {
				d.stripe[i].Unlock()
			}
		}
	}
}

// stripeSpan is a run [a, b) of stripe indexes.
type stripeSpan struct{ a, b int }

// stripeSpans returns the stripes of grains [g0, g1), in lock order:
// at most two ascending spans.
func (d *Disk) stripeSpans(g0, g1 uint64) []stripeSpan {
	if g1 <= g0 {
		return nil
	}
	per := max(uint64(stripeBytes/d.grain), 1)
	g0, g1 = g0/per, (g1-1)/per+1 // grains to regions
	if n := g1 - g0; n >= stripes {
		return []stripeSpan{{0, stripes}}
	} else if a := int(g0 % stripes); a+int(n) <= stripes {
		return []stripeSpan{{a, a + int(n)}}
	} else {
		return []stripeSpan{{0, a + int(n) - stripes}, {a, stripes}}
	}
}

// target is the chain index that takes a guest write to grain g: the top,
// except while the top merges into its parent, when grains it no longer
// holds are written to the parent directly (so the merge converges).
// Caller holds g's stripe lock.
func (d *Disk) target(g uint64) int {
	top := len(d.chain) - 1
	if d.merge != nil && d.merge.live && d.chain[top].state(uint32(g)) == absent {
		return top - 1
	}
	return top
}

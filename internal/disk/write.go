package disk

import (
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/vfs"
)

// pendingWrite coalesces consecutive direct writes to one layer.
type pendingWrite struct {
	li       int
	off      int64
	buf      []byte
	startIdx int // index into the caller's p
}

// writeGrains writes p at off through the chain, copying up partial grains
// that the target layer does not hold. Caller holds the shared barrier and
// the grains' stripe locks.
func (d *Disk) writeGrains(p []byte, off int64) error {
	end := off + int64(len(p))
	g0, g1 := d.grains(off, int64(len(p)))
	var pend *pendingWrite
	var fresh []run // grains that become present once the data is written
	flush := func() error {
		if pend == nil {
			return nil
		}
		l := d.chain[pend.li]
		_, err := l.f.WriteAt(pend.buf, pend.off)
		l.written.Store(true)
		pend = nil
		return err
	}
	for g := g0; g < g1; g++ {
		gs := int64(g) * d.grain
		ge := min(gs+d.grain, d.size)
		a, b := max(off, gs), min(end, ge)
		seg := p[a-off : b-off]
		li := d.target(g)
		l := d.chain[li]
		st := l.state(uint32(g))
		if l.flat || st == present || (a == gs && b == ge) {
			if pend != nil && pend.li == li && pend.off+int64(len(pend.buf)) == a {
				pend.buf = p[pend.startIdx : b-off]
			} else {
				if err := flush(); err != nil {
					return err
				}
				pend = &pendingWrite{li: li, off: a, buf: seg, startIdx: int(a - off)}
			}
		} else {
			if err := flush(); err != nil {
				return err
			}
			if err := d.copyUp(li, g, seg, a); err != nil {
				return err
			}
		}
		if !l.flat && st != present {
			if n := len(fresh); n > 0 && fresh[n-1].src == li && fresh[n-1].g1 == g {
				fresh[n-1].g1++
			} else {
				fresh = append(fresh, run{g0: g, g1: g + 1, src: li})
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for _, r := range fresh {
		d.chain[r.src].set(r.g0, r.g1, present)
	}
	return nil
}

// copyUp writes a whole grain to layer li: what the layers below it (or
// zeroes, for a zeroed grain) hold, overlaid with seg at off.
//
// Invariant 2 (docs/format.md): the grain is whole before it is marked present.
func (d *Disk) copyUp(li int, g uint64, seg []byte, off int64) error {
	l := d.chain[li]
	gs := int64(g) * d.grain
	buf := make([]byte, min(gs+d.grain, d.size)-gs)
	if l.state(uint32(g)) != zeroed {
		if err := d.readChain(d.chain[:li], buf, gs); err != nil {
			return err
		}
	}
	copy(buf[off-gs:], seg)
	if _, err := l.f.WriteAt(buf, gs); err != nil {
		return err
	}
	l.written.Store(true)
	return nil
}

// Zero makes [off, off+n) read as zeroes. With punch the space may be
// deallocated (NBD WRITE_ZEROES without NO_HOLE, and Trim); without it
// the range stays allocated. It is WriteZeroes(off, n, !punch, false).
func (d *Disk) Zero(off, n int64, punch bool) error { return d.WriteZeroes(off, n, !punch, false) }

// WriteZeroes makes [off, off+n) read as zeroes, as NBD_CMD_WRITE_ZEROES
// does (docs/format.md, "Zeroed, unmapped and shared ranges"):
//   - noHole (NBD_CMD_FLAG_NO_HOLE): the range stays (or becomes)
//     allocated: a flat layer gets FALLOC_FL_ZERO_RANGE, a delta's whole
//     grains are zero-filled in place and marked present. Without it, a
//     flat layer's range is punched (kept allocated on a thick disk) and a
//     delta's whole grains are marked zero and punched, which hides the
//     data below without touching a frozen layer.
//   - fast (NBD_CMD_FLAG_FAST_ZERO): if the engine could only zero by
//     writing zeroes, it fails with ErrNotSupported before changing any
//     data (CBT may over-report the range, never miss it).
//
// Partial grains of a delta are written as zeroes (copied up first).
//
// Invariant 9 (docs/format.md).
func (d *Disk) WriteZeroes(off, n int64, noHole, fast bool) error {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	return noSpace(d.zero(off, n, noHole, fast))
}

func (d *Disk) zero(off, n int64, noHole, fast bool) error {
	if fast && !vfs.Native(d.chain[len(d.chain)-1].f) {
		return fmt.Errorf("%w: fast zero on a file system without fallocate", ErrNotSupported)
	}
	if err := d.beginWrite(off, n); err != nil || n == 0 {
		return err
	}
	if len(d.chain) == 1 {
		unlock := d.lockGrains(d.grains(off, n)) // against a compare-and-write (caw.go)
		defer unlock()
		return d.zeroFlat(d.chain[0], off, n, noHole, fast)
	}
	end := off + n
	m0 := (off + d.grain - 1) / d.grain * d.grain
	m1 := min(end/d.grain*d.grain, end)
	if end == d.size {
		m1 = end // the last grain may be short
	}
	if m0 >= m1 { // inside one grain
		return d.zeroBytes(off, n)
	}
	// Whole grains first: a fast zero that cannot be fast fails there,
	// before the partial grains are written.
	if err := d.zeroGrains(uint64(m0/d.grain), uint64((m1+d.grain-1)/d.grain), noHole, fast); err != nil {
		return err
	}
	if err := d.zeroBytes(off, m0-off); err != nil {
		return err
	}
	return d.zeroBytes(m1, end-m1)
}

// Trim deallocates [off, off+n); it reads back as zeroes. On a thick
// disk the flat layer's range stays reserved.
func (d *Disk) Trim(off, n int64) error { return d.Zero(off, n, true) }

// zeroFlat zeroes a range of the flat layer: a hole on a thin disk unless
// keep (NO_HOLE) or thick provisioning asks for the space to stay.
func (d *Disk) zeroFlat(l *layer, off, n int64, keep, fast bool) error {
	l.written.Store(true)
	// Again after, as in WriteAt: a concurrent flush may have cleared it.
	defer l.written.Store(true)
	if !keep && !d.thick() {
		return vfs.PunchHole(l.f, off, n)
	}
	return zeroKeep(l.f, off, n, fast)
}

// zeroKeep zeroes [off, off+n) of f keeping it allocated; fast refuses
// to fall back to writing zeroes.
func zeroKeep(f vfs.File, off, n int64, fast bool) error {
	err := vfs.ZeroRangeFast(f, off, n)
	if !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	if fast {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return vfs.ZeroRange(f, off, n)
}

var zeroes = make([]byte, 1<<20)

func (d *Disk) zeroBytes(off, n int64) error {
	if n == 0 {
		return nil
	}
	unlock := d.lockGrains(d.grains(off, n))
	defer unlock()
	return d.writeGrains(zeroes[:n], off)
}

// zeroGrains zeroes whole grains [g0, g1), by target layer. Invariant 2:
// a grain kept allocated is zero-filled before it is marked present.
func (d *Disk) zeroGrains(g0, g1 uint64, keep, fast bool) error {
	unlock := d.lockGrains(g0, g1)
	defer unlock()
	for _, r := range d.targetRuns(g0, g1) {
		l := d.chain[r.src]
		a := int64(r.g0) * d.grain
		b := min(int64(r.g1)*d.grain, d.size)
		var err error
		switch {
		case l.flat:
			err = d.zeroFlat(l, a, b-a, keep, fast)
		case keep:
			if err = zeroKeep(l.f, a, b-a, fast); err == nil {
				l.written.Store(true)
				l.set(r.g0, r.g1, present)
			}
		default:
			if err = vfs.PunchHole(l.f, a, b-a); err == nil {
				l.written.Store(true)
				l.set(r.g0, r.g1, zeroed)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// targetRuns splits [g0, g1) by the layer that takes writes (see target).
func (d *Disk) targetRuns(g0, g1 uint64) []run {
	top := len(d.chain) - 1
	if d.merge == nil || !d.merge.live {
		return []run{{g0: g0, g1: g1, src: top}}
	}
	child := d.chain[top]
	child.mu.RLock()
	defer child.mu.RUnlock()
	var out []run
	for g := g0; g < g1; {
		r := run{g0: g, g1: g1, src: top}
		if s := child.stateLocked(uint32(g)); s != absent {
			r.g1 = clampEnd(g1, child.runEndLocked(uint32(g), s))
		} else {
			r.src = top - 1
			r.g1 = clampEnd(g1, child.nextSetLocked(uint32(g)))
		}
		r.g1 = max(r.g1, g+1) // always advance (see resolve)
		out = append(out, r)
		g = r.g1
	}
	return out
}

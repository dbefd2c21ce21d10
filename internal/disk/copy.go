package disk

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// MaxCopySegment is the most one CopyFrom moves: VMware's XCOPY maximum
// transfer (16 MiB; it sends 4 MiB by default). The host advertises it.
const MaxCopySegment = 16 << 20

// CopyStats counts the bytes a copy moved, by how it moved them.
type CopyStats struct {
	Reflinked int64 // extents shared (FICLONERANGE): no data moved
	Copied    int64 // copied inside the kernel (copy_file_range)
	Written   int64 // read and written by the engine (partial grains, fallback)
	Zeroed    int64 // holes and zero grains of the source, zeroed in the target
}

func (s *CopyStats) add(o CopyStats) {
	s.Reflinked += o.Reflinked
	s.Copied += o.Copied
	s.Written += o.Written
	s.Zeroed += o.Zeroed
}

// srcRun is a run of a source view: data in file f at natural offsets,
// or zeroes.
type srcRun struct {
	off, n int64
	f      vfs.File // nil: zeroes
}

// sourceRuns maps [off, off+n) of chain (of disk d) to the files holding
// it, holes of the flat layer and data past a layer file's end as zero
// runs. Caller holds d's shared barrier.
func (d *Disk) sourceRuns(chain []*layer, off, n int64) ([]srcRun, error) {
	var out []srcRun
	add := func(a, b int64, f vfs.File) {
		if k := len(out); k > 0 && out[k-1].f == f && out[k-1].off+out[k-1].n == a {
			out[k-1].n += b - a
		} else if b > a {
			out = append(out, srcRun{a, b - a, f})
		}
	}
	end := off + n
	g0, g1 := d.grains(off, n)
	for _, r := range resolve(chain, g0, g1) {
		a, b := max(off, int64(r.g0)*d.grain), min(end, int64(r.g1)*d.grain)
		if r.st == zeroed {
			add(a, b, nil)
			continue
		}
		f := chain[r.src].f
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		tail := b // past the layer file's end reads as zeroes
		if fsz := fi.Size(); b > fsz {
			tail = max(a, fsz)
		}
		if err := addFileRuns(add, f, r.src == 0, a, tail); err != nil {
			return nil, err
		}
		add(tail, b, nil)
	}
	return out, nil
}

// addFileRuns adds [a, b) of f: as data, or for a flat layer split into
// its data extents and holes.
func addFileRuns(add func(a, b int64, f vfs.File), f vfs.File, flat bool, a, b int64) error {
	if !flat || b <= a {
		add(a, b, f)
		return nil
	}
	fe, err := vfs.Extents(f, a, b-a)
	if err != nil {
		return err
	}
	for _, e := range fe {
		if e.Data {
			add(e.Off, e.Off+e.Len, f)
		} else {
			add(e.Off, e.Off+e.Len, nil)
		}
	}
	return nil
}

// moveBytes copies [srcOff, srcOff+n) of src to dstOff of dst by the
// cheapest means the file system has: shared extents for the block-aligned
// middle, copy_file_range, or read and write. Never through a socket.
func moveBytes(dst, src vfs.File, srcOff, dstOff, n int64, st *CopyStats) error {
	if bs := vfs.BlockSize(dst); srcOff%bs == dstOff%bs {
		head := min(n, (bs-srcOff%bs)%bs)
		mid := (n - head) / bs * bs
		err := vfs.Reflink(dst, src, srcOff+head, dstOff+head, mid)
		switch {
		case err == nil && mid > 0:
			st.Reflinked += mid
			if err := moveBytes2(dst, src, srcOff, dstOff, head, st); err != nil {
				return err
			}
			return moveBytes2(dst, src, srcOff+head+mid, dstOff+head+mid, n-head-mid, st)
		case err != nil && !errors.Is(err, fsutil.ErrNoReflink):
			return err
		}
	}
	return moveBytes2(dst, src, srcOff, dstOff, n, st)
}

// moveBytes2 is moveBytes without extent sharing.
func moveBytes2(dst, src vfs.File, srcOff, dstOff, n int64, st *CopyStats) error {
	if n <= 0 {
		return nil
	}
	err := vfs.CopyRange(dst, src, srcOff, dstOff, n)
	if err == nil {
		st.Copied += n
		return nil
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	buf := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		c := min(int64(len(buf)), n-done)
		if err := fsutil.ReadFull(src, buf[:c], srcOff+done); err != nil {
			return err
		}
		if _, err := dst.WriteAt(buf[:c], dstOff+done); err != nil {
			return err
		}
		done += c
	}
	st.Written += n
	return nil
}

// sameDatastore reports whether two disks live in one datastore directory.
func sameDatastore(a, b *Disk) bool { return filepath.Dir(a.dir) == filepath.Dir(b.dir) }

// CopyFrom is the data mover (VAAI full copy, XCOPY): it copies
// [srcOff, srcOff+n) of src's snapshot snap ("" for src's live data) to
// dstOff of d inside the datastore, sharing extents where the file system
// can, else with copy_file_range. CBT records the target range. n is at
// most MaxCopySegment (ErrTooLarge); a source in another datastore is
// ErrNotSupported (the caller falls back to reading and writing); ranges
// must be sector-aligned and inside both disks; an overlapping copy
// within one live disk is ErrInvalid. On error the target range may hold
// part of the copy, as after an interrupted write.
//
// Invariant 12 (docs/format.md).
func (d *Disk) CopyFrom(src *Disk, snap string, srcOff, dstOff, n int64) (CopyStats, error) {
	if !sameDatastore(d, src) {
		return CopyStats{}, fmt.Errorf("%w: source disk %s is in another datastore", ErrNotSupported, filepath.Base(src.dir))
	}
	if n > MaxCopySegment {
		return CopyStats{}, fmt.Errorf("%w: %d bytes, maximum %d", ErrTooLarge, n, MaxCopySegment)
	}
	unlock := lockBarriers(d, src)
	defer unlock()
	chain, size, err := src.view(snap)
	if err != nil {
		return CopyStats{}, err
	}
	if err := checkRange(srcOff, n, size); err != nil {
		return CopyStats{}, fmt.Errorf("source: %w", err)
	}
	if err := checkRange(dstOff, n, d.size); err != nil {
		return CopyStats{}, fmt.Errorf("target: %w", err)
	}
	if src == d && snap == "" && srcOff < dstOff+n && dstOff < srcOff+n {
		return CopyStats{}, fmt.Errorf("%w: overlapping ranges of one live disk", ErrInvalid)
	}
	if n == 0 {
		return CopyStats{}, nil
	}
	defer d.lockCopy(src, snap, srcOff, dstOff, n)()
	if err := d.beginWrite(dstOff, n); err != nil {
		return CopyStats{}, noSpace(err)
	}
	st, err := d.copyLocked(src, chain, srcOff, dstOff, n)
	return st, noSpace(err)
}

// lockBarriers takes the shared barriers of d and src, in directory order
// (two copies in opposite directions must not wait on each other).
func lockBarriers(d, src *Disk) func() {
	a, b := d, src
	if b.dir < a.dir {
		a, b = b, a
	}
	a.barrier.RLock()
	if a == b {
		return a.barrier.RUnlock
	}
	b.barrier.RLock()
	return func() { b.barrier.RUnlock(); a.barrier.RUnlock() }
}

// view is the chain and size of snapshot snap ("" live). Shared barrier held.
func (d *Disk) view(snap string) ([]*layer, int64, error) {
	if d.closed {
		return nil, 0, ErrClosed
	}
	if snap == "" {
		return d.chain, d.size, nil
	}
	_, sm := d.meta.snapshot(snap)
	if sm == nil {
		return nil, 0, fmt.Errorf("snapshot %s: %w", snap, ErrNotFound)
	}
	return d.chain[:d.meta.layerIndex(sm.Layer)+1], sm.Size, nil
}

// lockCopy takes the grain locks a copy needs: the target's range, and a
// live source's range (the hull of both on one disk, so no stripe is
// taken twice); in directory order across disks.
func (d *Disk) lockCopy(src *Disk, snap string, srcOff, dstOff, n int64) func() {
	if src == d {
		if snap == "" {
			return d.lockGrains(d.grains(min(srcOff, dstOff), max(srcOff, dstOff)+n-min(srcOff, dstOff)))
		}
		return d.lockGrains(d.grains(dstOff, n))
	}
	type lk struct {
		d      *Disk
		off, n int64
	}
	locks := []lk{{d, dstOff, n}}
	if snap == "" {
		locks = append(locks, lk{src, srcOff, n})
		if src.dir < d.dir {
			locks[0], locks[1] = locks[1], locks[0]
		}
	}
	var unlocks []func()
	for _, l := range locks {
		unlocks = append(unlocks, l.d.lockGrains(l.d.grains(l.off, l.n)))
	}
	return func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
}

// copyLocked moves the data: partial grains of a delta target through
// the write path, whole grains (and a flat target) by file extents.
func (d *Disk) copyLocked(src *Disk, chain []*layer, srcOff, dstOff, n int64) (CopyStats, error) {
	var st CopyStats
	end := dstOff + n
	m0, m1 := dstOff, end
	if len(d.chain) > 1 {
		m0 = (dstOff + d.grain - 1) / d.grain * d.grain
		m1 = min(end/d.grain*d.grain, end)
		if end == d.size {
			m1 = end
		}
		if m0 >= m1 {
			m0, m1 = end, end
		}
	}
	for _, part := range [][2]int64{{dstOff, m0}, {m1, end}} {
		if part[1] <= part[0] {
			continue
		}
		buf := make([]byte, part[1]-part[0])
		if err := src.readChain(chain, buf, srcOff+part[0]-dstOff); err != nil {
			return st, err
		}
		if err := d.writeGrains(buf, part[0]); err != nil {
			return st, err
		}
		st.Written += int64(len(buf))
	}
	if m1 <= m0 {
		return st, nil
	}
	runs, err := src.sourceRuns(chain, srcOff+m0-dstOff, m1-m0)
	if err != nil {
		return st, err
	}
	if len(d.chain) == 1 {
		return st, d.placeRuns(d.chain[0], runs, dstOff-srcOff, &st)
	}
	for _, tr := range d.targetRuns(uint64(m0/d.grain), uint64((m1+d.grain-1)/d.grain)) {
		a, b := int64(tr.g0)*d.grain, min(int64(tr.g1)*d.grain, d.size)
		if err := d.placeRuns(d.chain[tr.src], clipRuns(runs, a-(dstOff-srcOff), b-(dstOff-srcOff)), dstOff-srcOff, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// clipRuns keeps the parts of runs inside [a, b) (source offsets).
func clipRuns(runs []srcRun, a, b int64) []srcRun {
	var out []srcRun
	for _, r := range runs {
		x, y := max(a, r.off), min(b, r.off+r.n)
		if x < y {
			out = append(out, srcRun{x, y - x, r.f})
		}
	}
	return out
}

// placeRuns writes source runs into layer l at their offset + shift and,
// in a delta (whose range here is whole grains), marks the grains: zero
// where a zero run covers the whole grain, present elsewhere (invariant 2:
// after the data is in place).
func (d *Disk) placeRuns(l *layer, runs []srcRun, shift int64, st *CopyStats) error {
	l.written.Store(true)
	defer l.written.Store(true) // again after, as in WriteAt
	for _, r := range runs {
		at := r.off + shift
		var err error
		switch {
		case r.f == nil && l.flat:
			err = d.zeroFlat(l, at, r.n, false, false)
			st.Zeroed += r.n
		case r.f == nil:
			err = vfs.PunchHole(l.f, at, r.n)
			st.Zeroed += r.n
		default:
			err = moveBytes(l.f, r.f, r.off, at, r.n, st)
		}
		if err != nil {
			return err
		}
	}
	if l.flat || len(runs) == 0 {
		return nil
	}
	first, last := runs[0].off+shift, runs[len(runs)-1].off+runs[len(runs)-1].n+shift
	l.set(uint64(first/d.grain), uint64((last+d.grain-1)/d.grain), present)
	for _, r := range runs {
		if r.f != nil {
			continue
		}
		at := r.off + shift
		g0 := uint64((at + d.grain - 1) / d.grain)
		g1 := uint64((at + r.n) / d.grain)
		if at+r.n == d.size {
			g1 = uint64((d.size + d.grain - 1) / d.grain)
		}
		l.set(g0, g1, zeroed)
	}
	return nil
}

package backup

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/overlay"
)

// WritableExport serves a restore point read-write (instant recovery):
// the guest's writes go to an overlay, reads merge the overlay's blocks
// over the point's chunks, and the repository is never written. Recover
// copies it into a new disk and then switches it over (SwitchTo): from
// then on every request goes to that disk, on the same NBD connections.
type WritableExport struct {
	base *PointExport
	ov   *overlay.Overlay
	cs   int64

	// sw: every request holds it shared; the switch holds it alone, so
	// no request is in flight while the last chunks move.
	sw     sync.RWMutex
	target Target // set by the switch: serve from the new disk

	// stripes serialize requests touching the same chunk (a partial
	// block's copy-up against a write; Recover's copy against both).
	stripes [256]sync.Mutex
	// dirty, once Recover tracks, has a bit per chunk written since
	// Recover last copied it.
	dirty atomic.Pointer[[]atomic.Uint64]

	// OnError, when set, hears of every failed request.
	OnError func(op string, off int64, err error)
}

var _ nbd.Export = (*WritableExport)(nil)

// NewWritableExport serves base with ov taking the writes. The point's
// chunk size must be a multiple of the overlay's block size.
func NewWritableExport(base *PointExport, ov *overlay.Overlay) (*WritableExport, error) {
	if base.cs%overlay.BlockSize != 0 || ov.Size() != base.Size() {
		return nil, fmt.Errorf("writable export: chunk size %d, overlay of %d bytes for a %d-byte point: %w",
			base.cs, ov.Size(), base.Size(), ErrNotThisDisk)
	}
	return &WritableExport{base: base, ov: ov, cs: base.cs}, nil
}

// Size is the point's size.
func (e *WritableExport) Size() int64 { return e.base.Size() }

// ReadOnly is false: the overlay takes writes.
func (e *WritableExport) ReadOnly() bool { return false }

// MultiConn is true: every connection shares this export, and a flush
// syncs every write completed before it, whichever connection sent it.
func (e *WritableExport) MultiConn() bool { return true }

// Close does nothing: one WritableExport serves every connection.
func (e *WritableExport) Close() error { return nil }

// BlockSizes: any alignment (a partial block is copied up), whole
// chunks preferred.
func (e *WritableExport) BlockSizes() nbd.BlockSizes {
	return nbd.BlockSizes{Minimum: 1, Preferred: overlay.BlockSize, Maximum: 32 << 20}
}

// Switched reports whether requests go to the new disk.
func (e *WritableExport) Switched() bool {
	e.sw.RLock()
	defer e.sw.RUnlock()
	return e.target != nil
}

func (e *WritableExport) fail(op string, off int64, err error) error {
	if err == nil {
		return nil
	}
	if e.OnError != nil {
		e.OnError(op, off, err)
	}
	return fmt.Errorf("%s at %d: %w", op, off, err)
}

// ReadAt reads the point with the overlay's blocks on top (or the new
// disk after the switch).
func (e *WritableExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	e.sw.RLock()
	defer e.sw.RUnlock()
	return e.fail("read", off, e.view(ctx, p, off))
}

// ReadAtNoWait serves a read of blocks the guest has not written from
// the point's chunk cache (PointExport.ReadAtNoWait), and fails with
// ErrNotCached for anything that needs the overlay, the new disk, the
// repository or a lock another request holds.
func (e *WritableExport) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 || !e.sw.TryRLock() {
		return ErrNotCached
	}
	defer e.sw.RUnlock()
	end := off + int64(len(p))
	b0, b1 := uint64(off/overlay.BlockSize), uint64((end-1)/overlay.BlockSize)
	if e.target != nil || e.ov.AnyPresent(b0, b1-b0+1) {
		return ErrNotCached
	}
	return e.base.ReadAtNoWait(ctx, p, off)
}

// view reads what the guest sees: after the switch the new disk (whole
// blocks: it may want aligned requests), before it runs of present
// blocks from the overlay and the rest from the point.
func (e *WritableExport) view(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	a0, a1 := e.aligned(off, end)
	if e.target != nil && (a0 != off || a1 != end) {
		buf := make([]byte, a1-a0)
		if err := e.target.ReadAt(ctx, buf, a0); err != nil {
			return err
		}
		copy(p, buf[off-a0:])
		return nil
	} else if e.target != nil {
		return e.target.ReadAt(ctx, p, off)
	}
	b0, b1 := uint64(off/overlay.BlockSize), uint64((end-1)/overlay.BlockSize)
	if !e.ov.AnyPresent(b0, b1-b0+1) {
		return e.base.ReadAt(ctx, p, off)
	}
	for pos := off; pos < end; {
		b := uint64(pos / overlay.BlockSize)
		in := e.ov.Present(b)
		next := int64(b+1) * overlay.BlockSize
		for next < end && e.ov.Present(uint64(next/overlay.BlockSize)) == in {
			next += overlay.BlockSize
		}
		next = min(next, end)
		q := p[pos-off : next-off]
		var err error
		if in {
			err = e.ov.ReadAt(q, pos)
		} else {
			err = e.base.ReadAt(ctx, q, pos)
		}
		if err != nil {
			return err
		}
		pos = next
	}
	return nil
}

// aligned widens [off, end) to whole blocks (the last one may end at
// the disk's end).
func (e *WritableExport) aligned(off, end int64) (int64, int64) {
	return off / overlay.BlockSize * overlay.BlockSize,
		min((end+overlay.BlockSize-1)/overlay.BlockSize*overlay.BlockSize, e.Size())
}

// lockChunks locks the stripes of the chunks [off, off+n) touches, in
// stripe order, and returns the unlock.
func (e *WritableExport) lockChunks(off, n int64) func() {
	c0, c1 := off/e.cs, (off+max(n, 1)-1)/e.cs
	var held []int
	if c1-c0+1 >= int64(len(e.stripes)) {
		for i := range e.stripes {
			held = append(held, i)
		}
	} else {
		var seen [len(e.stripes)]bool
		for c := c0; c <= c1; c++ {
			seen[c%int64(len(e.stripes))] = true
		}
		for i, s := range seen {
			if s {
				held = append(held, i)
			}
		}
	}
	for _, i := range held {
		e.stripes[i].Lock()
	}
	return func() {
		for _, i := range held {
			e.stripes[i].Unlock()
		}
	}
}

// WriteAt writes into the overlay (or the new disk); fua syncs it.
func (e *WritableExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	e.sw.RLock()
	defer e.sw.RUnlock()
	unlock := e.lockChunks(off, int64(len(p)))
	err := e.write(ctx, p, off)
	unlock()
	if err == nil && fua {
		err = e.sync(ctx)
	}
	return e.fail("write", off, err)
}

// sync makes completed writes durable where they went.
func (e *WritableExport) sync(ctx context.Context) error {
	if e.target != nil {
		return e.target.Flush(ctx)
	}
	return e.ov.Sync()
}

// putBlocks stores whole blocks in the overlay, or the new disk.
func (e *WritableExport) putBlocks(ctx context.Context, p []byte, off int64) error {
	if e.target != nil {
		return e.target.WriteAt(ctx, p, off)
	}
	return e.ov.WriteBlocks(p, off)
}

// write stores p at off as whole blocks: partial blocks at either edge
// are first filled from the current view (copy-up, or read-modify-write
// on the new disk). The caller holds the chunks' stripes.
func (e *WritableExport) write(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	a0, a1 := e.aligned(off, end)
	defer e.markDirty(off, int64(len(p)))
	if a0 == off && a1 == end {
		return e.putBlocks(ctx, p, off)
	}
	buf := make([]byte, a1-a0)
	if a0 < off {
		if err := e.view(ctx, buf[:min(overlay.BlockSize, a1-a0)], a0); err != nil {
			return fmt.Errorf("copy-up: %w", err)
		}
	}
	if t := (a1 - 1) / overlay.BlockSize * overlay.BlockSize; end < a1 && !(t == a0 && a0 < off) {
		if err := e.view(ctx, buf[t-a0:], t); err != nil {
			return fmt.Errorf("copy-up: %w", err)
		}
	}
	copy(buf[off-a0:], p)
	return e.putBlocks(ctx, buf, a0)
}

// Zero makes a range read as zeroes: whole blocks become holes in the
// overlay (or zeroes on the new disk), partial ones are written. It is
// always fast.
func (e *WritableExport) Zero(ctx context.Context, off, n int64, _, _ bool) error {
	e.sw.RLock()
	defer e.sw.RUnlock()
	unlock := e.lockChunks(off, n)
	defer unlock()
	return e.fail("zero", off, e.zero(ctx, off, n))
}

func (e *WritableExport) zero(ctx context.Context, off, n int64) error {
	end := off + n
	i0 := (off + overlay.BlockSize - 1) / overlay.BlockSize * overlay.BlockSize
	i1 := end / overlay.BlockSize * overlay.BlockSize
	if end == e.Size() {
		i1 = end
	}
	if i0 >= i1 { // inside one block
		return e.write(ctx, make([]byte, n), off)
	}
	if i0 > off {
		if err := e.write(ctx, make([]byte, i0-off), off); err != nil {
			return err
		}
	}
	if end > i1 {
		if err := e.write(ctx, make([]byte, end-i1), i1); err != nil {
			return err
		}
	}
	defer e.markDirty(i0, i1-i0)
	if e.target != nil {
		return e.target.Zero(ctx, i0, i1-i0)
	}
	return e.ov.ZeroBlocks(i0, i1-i0)
}

// Trim zeroes: what a trimmed range reads as is the export's choice.
func (e *WritableExport) Trim(ctx context.Context, off, n int64) error {
	return e.Zero(ctx, off, n, true, false)
}

// Flush makes every completed write durable: the overlay's data, then
// its map journal (or the new disk's flush after the switch).
func (e *WritableExport) Flush(ctx context.Context) error {
	e.sw.RLock()
	defer e.sw.RUnlock()
	return e.fail("flush", 0, e.sync(ctx))
}

// MetaContexts offers base:allocation.
func (e *WritableExport) MetaContexts(prefix string) []string {
	if strings.HasPrefix(nbd.ContextBaseAllocation, prefix) {
		return []string{nbd.ContextBaseAllocation}
	}
	return nil
}

// BlockStatus is the point's answer with the overlay's blocks as data;
// after the switch everything is data.
func (e *WritableExport) BlockStatus(ctx context.Context, name string, off, length int64) ([]nbd.Extent, error) {
	e.sw.RLock()
	defer e.sw.RUnlock()
	if name != nbd.ContextBaseAllocation {
		return nil, fmt.Errorf("context %q: %w", name, nbd.ErrNotSupported)
	}
	if e.target != nil {
		return []nbd.Extent{{Length: uint64(min(length, e.Size()-off))}}, nil
	}
	ext, err := e.base.BlockStatus(ctx, name, off, length)
	if err != nil {
		return nil, err
	}
	var out []nbd.Extent
	add := func(l uint64, flags uint32) {
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Length += l
		} else {
			out = append(out, nbd.Extent{Length: l, Flags: flags})
		}
	}
	pos := uint64(off)
	for _, x := range ext {
		end := pos + x.Length
		b0, b1 := pos/overlay.BlockSize, (end-1)/overlay.BlockSize
		if x.Flags&nbd.StateHole == 0 || !e.ov.AnyPresent(b0, b1-b0+1) {
			add(x.Length, x.Flags)
			pos = end
			continue
		}
		for p := pos; p < end; {
			b := p / overlay.BlockSize
			next := min((b+1)*overlay.BlockSize, end)
			flags := x.Flags
			if e.ov.Present(b) {
				flags = 0
			}
			add(next-p, flags)
			p = next
		}
		pos = end
	}
	return out, nil
}

// markDirty notes the chunks a write touched, while Recover tracks.
func (e *WritableExport) markDirty(off, n int64) {
	d := e.dirty.Load()
	if d == nil || n <= 0 {
		return
	}
	for c := off / e.cs; c <= (off+n-1)/e.cs; c++ {
		(*d)[c/64].Or(1 << (c % 64))
	}
}

// trackDirty starts noting written chunks.
func (e *WritableExport) trackDirty() {
	slots := (e.Size() + e.cs - 1) / e.cs
	d := make([]atomic.Uint64, (slots+63)/64)
	e.dirty.Store(&d)
}

// takeDirty clears slot's dirty bit; the caller holds its stripe.
func (e *WritableExport) takeDirty(slot uint64) {
	if d := e.dirty.Load(); d != nil {
		(*d)[slot/64].And(^(uint64(1) << (slot % 64)))
	}
}

// dirtySlots lists the chunks written since Recover last copied them.
func (e *WritableExport) dirtySlots() []uint64 {
	d := e.dirty.Load()
	if d == nil {
		return nil
	}
	var out []uint64
	for i := range *d {
		w := (*d)[i].Load()
		for w != 0 {
			b := uint64(i*64) + uint64(bits.TrailingZeros64(w))
			out = append(out, b)
			w &= w - 1
		}
	}
	return out
}

// WritableExporter offers the export as the
// default and under the point's IDs.
type WritableExporter struct {
	Export *WritableExport
}

var _ nbd.Exporter = (*WritableExporter)(nil)

// Open returns the export for "", the point's full ID or its short ID.
func (x WritableExporter) Open(ctx context.Context, name string) (nbd.Export, error) {
	if _, err := (PointExporter{Export: x.Export.base}).Open(ctx, name); err != nil {
		return nil, err
	}
	return x.Export, nil
}

// List names the one export, by the point's short ID.
func (x WritableExporter) List(context.Context) ([]nbd.ExportInfo, error) {
	m := x.Export.base.im.Manifest()
	where := "served from the recovered disk"
	if x.Export.ov != nil {
		where = "overlay " + x.Export.ov.Dir()
	}
	return []nbd.ExportInfo{{Name: m.ID.Short(), Description: fmt.Sprintf("restore point %s of %s, %s, writable (%s)",
		m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"), where)}}, nil
}

package backup

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
)

// PointExport serves a restore point read-only over NBD, straight from
// the repository (instant recovery: a VM boots from it through a qcow2
// overlay, or qemu-img and nbdcopy read it, while nothing is restored).
// Every chunk is verified against its ID as it is read; a damaged chunk
// fails the read (EIO to the client) and is reported to OnError with its
// offset. Zero slots are holes in base:allocation, so clients skip them.
type PointExport struct {
	im *repo.Image
	cs int64
	// Read-ahead (SetReadAhead): after a small read of slot s that
	// follows slot s-1, slots up to s+ahead are loaded in the background,
	// one load at a time.
	ahead    int64
	aheadCtx context.Context
	last     atomic.Int64 // slot of the last small read
	loadedTo atomic.Int64 // read-ahead has loaded (or is loading) below this slot
	busy     atomic.Bool  // a read-ahead is running
	bg       sync.WaitGroup
	// OnError, when set, hears of every failed read.
	OnError func(off int64, err error)
}

var (
	_ nbd.Export = (*PointExport)(nil)
	_ Source     = (*PointExport)(nil)
)

// NewPointExport serves the image im.
func NewPointExport(im *repo.Image) *PointExport {
	return &PointExport{im: im, cs: int64(im.ChunkSize())}
}

// Size is the backed-up disk's size.
func (e *PointExport) Size() int64 { return e.im.Size() }

// ReadOnly is true: a restore point never changes.
func (e *PointExport) ReadOnly() bool { return true }

// MultiConn is true: nothing changes, so connections agree.
func (e *PointExport) MultiConn() bool { return true } // nothing changes
// Close does nothing: one PointExport serves every connection.
func (e *PointExport) Close() error { return nil } // shared by all connections

// BlockSizes prefers whole chunks: a read inside one is a full chunk's
// load and verification.
func (e *PointExport) BlockSizes() nbd.BlockSizes {
	return nbd.BlockSizes{Minimum: 1, Preferred: uint32(e.cs), Maximum: 32 << 20}
}

// ReadAt reads requests of whole chunks with one ranged load per pack,
// straight into p; other requests go through the image's cache of decoded
// chunks (a booting VM reads a few KiB at a time).
func (e *PointExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	var err error
	if off%e.cs == 0 && (int64(len(p))%e.cs == 0 || end == e.Size()) {
		err = e.readWhole(ctx, p, off)
	} else {
		err = e.readCached(ctx, p, off)
	}
	if err != nil {
		if e.OnError != nil {
			e.OnError(off, err)
		}
		return fmt.Errorf("restore point %v at %d: %w", e.im.Manifest().ID.Short(), off, err)
	}
	return nil
}

// ErrNotCached is what ReadAtNoWait returns for a read that would load
// chunks from the repository (or wait for a lock): the NBD server then
// gives the request to a worker, which calls ReadAt. It wraps
// nbd.ErrWouldBlock, which is what the NoWaitReader contract names.
var ErrNotCached = fmt.Errorf("read needs the repository: %w", nbd.ErrWouldBlock)

// ReadAtNoWait serves a read whose chunks are all in the cache, without
// loading anything, and fails with ErrNotCached otherwise. An NBD server
// that knows the method (nbd.NoWaitReader) runs such reads on the
// connection's reader goroutine, saving two goroutine hand-offs per warm
// 4 KiB read. Small reads feed the read-ahead as ReadAt's do, so a
// sequential reader served from read-ahead keeps it going.
func (e *PointExport) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	small := !(off%e.cs == 0 && (int64(len(p))%e.cs == 0 || end == e.Size()))
	if !small && !e.im.CacheHoldsImage() {
		return ErrNotCached // whole chunks bypass a cache that cannot hold the image
	}
	if small {
		e.readAhead(off/e.cs, (end-1)/e.cs)
	}
	if len(p) == 0 || !e.im.ReadCached(p, off) {
		return ErrNotCached
	}
	return nil
}

// readWhole loads whole chunks straight into p. When the cache can hold
// the whole image (--cache-mb sized for it), whole-chunk reads go
// through it too, so a second pass is served from memory; otherwise they
// stay out of it, so a copy does not evict a booting VM's working set.
func (e *PointExport) readWhole(ctx context.Context, p []byte, off int64) error {
	whole := e.im.CacheHoldsImage()
	if whole && e.im.ReadCached(p, off) {
		return nil
	}
	zero, err := e.im.ReadChunks(ctx, uint64(off/e.cs), int((int64(len(p))+e.cs-1)/e.cs), p)
	for i, z := range zero {
		if z { // ReadChunks leaves zero slots as they were
			clear(p[i*int(e.cs) : min((i+1)*int(e.cs), len(p))])
		}
	}
	if err == nil && whole {
		e.im.CacheChunks(uint64(off/e.cs), p)
	}
	return err
}

// readCached reads through the image's cache of decoded chunks.
func (e *PointExport) readCached(ctx context.Context, p []byte, off int64) error {
	e.readAhead(off/e.cs, (off+int64(len(p))-1)/e.cs)
	_, err := e.im.ReadAtContext(ctx, p, off) // in range: the server checked
	return err
}

// SetReadAhead makes small sequential reads load the next slots chunks
// ahead in the background (0: off), each load bounded by ctx (the
// serve's). Call before serving.
func (e *PointExport) SetReadAhead(ctx context.Context, slots int) {
	e.aheadCtx, e.ahead = ctx, int64(slots)
}

// readAhead starts loading the slots after [s0, s1] when reads go
// forward and the loaded window runs short; one load at a time (Wait
// waits for it).
func (e *PointExport) readAhead(s0, s1 int64) {
	if e.ahead <= 0 {
		return
	}
	prev := e.last.Swap(s1)
	if s0 != prev && s0 != prev+1 {
		return // not sequential
	}
	from := max(s1+1, e.loadedTo.Load())
	if from > s1+e.ahead/2 || !e.busy.CompareAndSwap(false, true) {
		return // enough ahead already, or a load is running
	}
	n := s1 + 1 + e.ahead - from
	e.loadedTo.Store(from + n)
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer e.busy.Store(false)
		// A failed read-ahead costs nothing: the reader loads the chunk
		// itself and gets the error.
		_ = e.im.Prefetch(e.aheadCtx, uint64(from), int(n))
	}()
}

// Wait waits for a background read-ahead to end.
func (e *PointExport) Wait() { e.bg.Wait() }

// WriteAt refuses: a restore point is read-only.
func (e *PointExport) WriteAt(context.Context, []byte, int64, bool) error { return nbd.ErrReadOnly }

// Zero refuses: a restore point is read-only.
func (e *PointExport) Zero(context.Context, int64, int64, bool, bool) error {
	return nbd.ErrReadOnly
}

// Trim refuses: a restore point is read-only.
func (e *PointExport) Trim(context.Context, int64, int64) error { return nbd.ErrReadOnly }

// Flush has nothing to make durable.
func (e *PointExport) Flush(context.Context) error { return nil }

// MetaContexts offers base:allocation only (a point has no CBT).
func (e *PointExport) MetaContexts(prefix string) []string {
	if strings.HasPrefix(nbd.ContextBaseAllocation, prefix) {
		return []string{nbd.ContextBaseAllocation}
	}
	return nil
}

// blockStatusSlots bounds one answer, so a query over a whole large disk
// costs at most a few index pages.
const blockStatusSlots = 1 << 14

// BlockStatus answers base:allocation from the index pages alone: zero
// slots are holes that read as zeroes, the rest is data.
func (e *PointExport) BlockStatus(ctx context.Context, name string, off, length int64) ([]nbd.Extent, error) {
	if name != nbd.ContextBaseAllocation {
		return nil, fmt.Errorf("context %q: %w", name, nbd.ErrNotSupported)
	}
	var out []nbd.Extent
	end := min(off+length, e.Size())
	for pos, i := off, 0; pos < end && i < blockStatusSlots; i++ {
		slot := pos / e.cs
		z, err := e.im.IsZero(ctx, uint64(slot))
		if err != nil {
			return nil, err
		}
		var flags uint32
		if z {
			flags = nbd.StateHole | nbd.StateZero
		}
		l := uint64(min((slot+1)*e.cs, end) - pos)
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Length += l
		} else {
			out = append(out, nbd.Extent{Length: l, Flags: flags})
		}
		pos += int64(l)
	}
	return out, nil
}

// PointExporter offers one restore point as the default export and under
// its ID.
type PointExporter struct {
	Export *PointExport
}

var _ nbd.Exporter = (*PointExporter)(nil)

// Open returns the export for "", the point's full ID or its short ID.
func (x PointExporter) Open(_ context.Context, name string) (nbd.Export, error) {
	if name != "" && name != x.Export.im.Manifest().ID.String() && name != x.Export.im.Manifest().ID.Short() {
		return nil, fmt.Errorf("export %q: %w", name, nbd.ErrUnknownExport)
	}
	return x.Export, nil
}

// List names the one export, by the point's short ID.
func (x PointExporter) List(context.Context) ([]nbd.ExportInfo, error) {
	m := x.Export.im.Manifest()
	return []nbd.ExportInfo{{Name: m.ID.Short(), Description: fmt.Sprintf("restore point %s of %s, %s (read-only)",
		m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"))}}, nil
}

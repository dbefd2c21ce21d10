package backup

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"

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
	// OnError, when set, hears of every failed read.
	OnError func(off int64, err error)
	cache   *chunkCache
}

// pointCacheChunks bounds the decoded chunks a PointExport keeps for reads
// smaller than a chunk (16 MiB at 64 KiB): a booting VM reads a few KiB at
// a time, and without the cache each read decoded its whole chunk again.
const pointCacheChunks = 256

// NewPointExport serves the image im.
func NewPointExport(im *repo.Image) *PointExport {
	return &PointExport{im: im, cs: int64(im.ChunkSize()), cache: newChunkCache(pointCacheChunks)}
}

func (e *PointExport) Size() int64     { return e.im.Size() }
func (e *PointExport) ReadOnly() bool  { return true }
func (e *PointExport) MultiConn() bool { return true } // nothing changes
func (e *PointExport) Close() error    { return nil }  // shared by all connections

// BlockSizes prefers whole chunks: a read inside one is a full chunk's
// load and verification.
func (e *PointExport) BlockSizes() nbd.BlockSizes {
	return nbd.BlockSizes{Minimum: 1, Preferred: uint32(e.cs), Maximum: 32 << 20}
}

// ReadAt reads requests of whole chunks with one ranged load per pack,
// straight into p; other requests go chunk by chunk through the cache.
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

func (e *PointExport) readWhole(ctx context.Context, p []byte, off int64) error {
	zero, err := e.im.ReadChunks(ctx, uint64(off/e.cs), int((int64(len(p))+e.cs-1)/e.cs), p)
	for i, z := range zero {
		if z { // ReadChunks leaves zero slots as they were
			clear(p[i*int(e.cs) : min((i+1)*int(e.cs), len(p))])
		}
	}
	return err
}

func (e *PointExport) readCached(ctx context.Context, p []byte, off int64) error {
	for n := 0; n < len(p); {
		pos := off + int64(n)
		slot := uint64(pos / e.cs)
		// The load serves every reader waiting for the chunk, so one
		// client going away must not fail it for the others.
		load := func() ([]byte, error) { return e.im.ReadChunk(context.WithoutCancel(ctx), slot) }
		chunk, err := e.cache.get(ctx, slot, load)
		if err != nil {
			return err
		}
		n += copy(p[n:], chunk[pos%e.cs:])
	}
	return nil
}

func (e *PointExport) WriteAt(context.Context, []byte, int64, bool) error { return nbd.ErrReadOnly }
func (e *PointExport) Zero(context.Context, int64, int64, bool, bool) error {
	return nbd.ErrReadOnly
}
func (e *PointExport) Trim(context.Context, int64, int64) error { return nbd.ErrReadOnly }
func (e *PointExport) Flush(context.Context) error              { return nil }

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

func (x PointExporter) Open(_ context.Context, name string) (nbd.Export, error) {
	if name != "" && name != x.Export.im.Manifest().ID.String() && name != x.Export.im.Manifest().ID.Short() {
		return nil, fmt.Errorf("export %q: %w", name, nbd.ErrUnknownExport)
	}
	return x.Export, nil
}

func (x PointExporter) List(context.Context) ([]nbd.ExportInfo, error) {
	m := x.Export.im.Manifest()
	return []nbd.ExportInfo{{Name: m.ID.Short(), Description: fmt.Sprintf("restore point %s of %s, %s (read-only)",
		m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"))}}, nil
}

// chunkCache keeps the most recently used decoded chunks, and loads each
// missing one once however many readers want it at the same time (a
// client's parallel small reads of one chunk).
type chunkCache struct {
	max int
	mu  sync.Mutex
	m   map[uint64]*list.Element // of *cached
	lru list.List                // front: most recent
}

type cached struct {
	slot  uint64
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, m: map[uint64]*list.Element{}}
}

// get returns slot's chunk, loading it if no one is; a reader waiting for
// another's load gives up when its ctx ends.
func (c *chunkCache) get(ctx context.Context, slot uint64, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.m[slot]; ok {
		c.lru.MoveToFront(el)
		ent := el.Value.(*cached)
		c.mu.Unlock()
		select {
		case <-ent.ready:
			return ent.data, ent.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ent := &cached{slot: slot, ready: make(chan struct{})}
	c.m[slot] = c.lru.PushFront(ent)
	if c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*cached).slot)
	}
	c.mu.Unlock()
	ent.data, ent.err = load()
	close(ent.ready)
	if ent.err != nil { // the next reader tries again
		c.mu.Lock()
		if el, ok := c.m[slot]; ok && el.Value == ent {
			c.lru.Remove(el)
			delete(c.m, slot)
		}
		c.mu.Unlock()
	}
	return ent.data, ent.err
}

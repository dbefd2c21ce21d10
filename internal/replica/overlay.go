package replica

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// testCopy is a test failover's scratch copy of one replica disk: a redo
// file over the point's snapshot, written in 4 KiB blocks. It is
// scratch: a restart of the host drops it (cleanup at start).
type testCopy struct {
	group, disk, export string
	point               uint64
	snap                *disk.Snapshot
	redo                *os.File

	mu      sync.RWMutex
	written *roaring.Bitmap // blocks held by redo
}

const redoBlock = 4096

func newTestCopy(d *disk.Disk, group, name string, point uint64, path string) (*testCopy, error) {
	s, err := d.OpenSnapshot(pointSnap(point))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &testCopy{group: group, disk: name, export: name + "-test", point: point, snap: s, redo: f,
		written: roaring.New()}, nil
}

func (c *testCopy) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.snap.Close()
	c.redo.Close()
	if rerr := os.Remove(c.redo.Name()); err == nil {
		err = rerr
	}
	return err
}

// export is an NBD view of the copy; closing it keeps the copy.
func (c *testCopy) open(ctx context.Context) (nbd.Export, error) { return &testExport{c}, nil }

type testExport struct{ c *testCopy }

var _ nbd.Export = (*testExport)(nil)

// Size is the point's size.
func (e *testExport) Size() int64 { return e.c.snap.Size() }

// ReadOnly is false: the scratch copy takes writes.
func (e *testExport) ReadOnly() bool { return false }

// MultiConn is true: one redo file behind every connection.
func (e *testExport) MultiConn() bool { return true }

// BlockSizes: 512-byte minimum, 4 KiB preferred (the redo block).
func (e *testExport) BlockSizes() nbd.BlockSizes {
	return nbd.BlockSizes{Minimum: 512, Preferred: redoBlock, Maximum: 32 << 20}
}

// Close keeps the copy: failover --cleanup removes it.
func (e *testExport) Close() error { return nil }

// Flush syncs the redo file.
func (e *testExport) Flush(ctx context.Context) error { return e.c.redo.Sync() }

// ReadAt reads written blocks from the redo file, the rest from the point.
func (e *testExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	c := e.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if off < 0 || off+int64(len(p)) > c.snap.Size() {
		return nbd.ErrOutOfRange
	}
	for len(p) > 0 {
		b := off / redoBlock
		n := min(int64(len(p)), (b+1)*redoBlock-off)
		var err error
		if c.written.Contains(uint32(b)) {
			_, err = c.redo.ReadAt(p[:n], off)
		} else {
			_, err = c.snap.ReadAt(p[:n], off)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteAt copies partial blocks up from the point, then writes.
func (e *testExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	c := e.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if off < 0 || off+int64(len(p)) > c.snap.Size() {
		return nbd.ErrNoSpace
	}
	blk := make([]byte, redoBlock)
	for len(p) > 0 {
		b := off / redoBlock
		n := min(int64(len(p)), (b+1)*redoBlock-off)
		if n < redoBlock && !c.written.Contains(uint32(b)) {
			bs := b * redoBlock
			m := min(redoBlock, c.snap.Size()-bs)
			if _, err := c.snap.ReadAt(blk[:m], bs); err != nil {
				return err
			}
			if _, err := c.redo.WriteAt(blk[:m], bs); err != nil {
				return err
			}
		}
		if _, err := c.redo.WriteAt(p[:n], off); err != nil {
			return fmt.Errorf("test copy: %w", err)
		}
		c.written.Add(uint32(b))
		p, off = p[n:], off+n
	}
	if fua {
		return c.redo.Sync()
	}
	return nil
}

// Zero writes zeroes.
func (e *testExport) Zero(ctx context.Context, off, length int64, punch, fast bool) error {
	for length > 0 {
		n := min(length, 1<<20)
		if err := e.WriteAt(ctx, make([]byte, n), off, false); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// Trim zeroes (a trimmed range reads as zeroes).
func (e *testExport) Trim(ctx context.Context, off, length int64) error {
	return e.Zero(ctx, off, length, true, false)
}

// MetaContexts offers base:allocation only.
func (e *testExport) MetaContexts(prefix string) []string {
	if strings.HasPrefix(nbd.ContextBaseAllocation, prefix) {
		return []string{nbd.ContextBaseAllocation}
	}
	return nil
}

// BlockStatus says everything is data: a scratch copy does not track holes.
func (e *testExport) BlockStatus(ctx context.Context, name string, off, length int64) ([]nbd.Extent, error) {
	if name != nbd.ContextBaseAllocation {
		return nil, fmt.Errorf("%w: context %s", nbd.ErrNotSupported, name)
	}
	return []nbd.Extent{{Length: uint64(length)}}, nil
}

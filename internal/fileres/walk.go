package fileres

import (
	"context"
	"fmt"
	"io"
)

// maxDepth bounds the directory nesting a walk follows.
const maxDepth = 1024

// WalkFunc is called for every file of a walk, a directory before its
// entries; post is called for a directory after them (nil: not needed).
type WalkFunc func(rel string, r Ref, n Node) error

// Walk visits ref and everything under it, rel being ref's name in the
// output. A directory that contains itself (a damaged filesystem) is (F3)
// refused with ErrDamaged rather than walked forever.
func (p *Point) Walk(ctx context.Context, rel string, r Ref, pre, post WalkFunc) error {
	return p.walk(ctx, rel, r, pre, post, map[Ref]bool{}, 0)
}

func (p *Point) walk(ctx context.Context, rel string, r Ref, pre, post WalkFunc, up map[Ref]bool, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := p.Stat(ctx, r)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := pre(rel, r, n); err != nil {
		return err
	}
	if !n.IsDir() {
		return nil
	}
	if up[r] || depth > maxDepth {
		return fmt.Errorf("%s: directory loop or nesting over %d: %w", rel, maxDepth, ErrDamaged)
	}
	up[r] = true
	defer delete(up, r)
	ents, err := p.ReadDir(ctx, r)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	for _, e := range ents {
		if err := p.walk(ctx, rel+"/"+e.Name, e.Ref, pre, post, up, depth+1); err != nil {
			return err
		}
	}
	if post != nil {
		return post(rel, r, n)
	}
	return nil
}

// copyBuf is the size of one read of a file's contents: large enough
// for the Source to see the reads go in order and read ahead.
const copyBuf = 1 << 20

// CopyData writes a file's data stretches to w at their offsets and
// returns the bytes copied; holes are left alone (sparse).
func CopyData(ctx context.Context, f File, w io.WriterAt) (int64, error) {
	exts, err := f.Extents(ctx)
	if err != nil {
		return 0, err
	}
	buf := copyBuffer(f.Size())
	var total int64
	for _, e := range exts {
		n, err := io.CopyBuffer(io.NewOffsetWriter(w, e.Off), ctxReader{ctx, io.NewSectionReader(f, e.Off, e.Len)}, buf)
		total += n
		if err != nil {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
	return total, nil
}

// ctxReader ends a copy when ctx ends (a dump or restore interrupted).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read implements io.Reader.
func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// copyBuffer is a buffer for copying a file of size bytes: at most
// copyBuf, and no larger than the file (a tree of small files would
// otherwise allocate a megabyte each).
func copyBuffer(size int64) []byte {
	return make([]byte, max(512, min(int64(copyBuf), size)))
}

package disk

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/vfs"
)

// maxSpanBlocks bounds a span: adjacent marked blocks read with one
// resolve and one read per layer run (1 MiB at the 64 KiB default).
const maxSpanBlocks = 16

// blockSpan is the marked blocks [first, first+n), adjacent.
type blockSpan struct{ first, n int64 }

// spansOf groups sorted, distinct blocks into runs of adjacent ones.
func spansOf(blocks []int64) []blockSpan {
	var out []blockSpan
	for _, b := range blocks {
		if k := len(out) - 1; k >= 0 && out[k].first+out[k].n == b && out[k].n < maxSpanBlocks {
			out[k].n++
			continue
		}
		out = append(out, blockSpan{b, 1})
	}
	return out
}

// hashBlocks sets the leaves of blocks (sorted) with treeWorkers
// goroutines. A block is read only where a layer holds data (T2): holes
// and zeroed grains are zeroes never read, and a block with no data at
// all is the zero leaf, neither read nor hashed.
func (d *Disk) hashBlocks(ctx context.Context, view *Snapshot, t *hashtree.Tree, blocks []int64) error {
	var mu sync.Mutex // Set is not concurrent
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(treeWorkers)
	spans := spansOf(blocks)
	const part = 64 // spans per goroutine
	bs := int64(t.BlockSize())
	for i := 0; i < len(spans); i += part {
		work := spans[i:min(i+part, len(spans))]
		g.Go(func() error {
			buf, data := make([]byte, maxSpanBlocks*bs), make([]bool, maxSpanBlocks)
			for _, s := range work {
				if err := ctx.Err(); err != nil {
					return err
				}
				n := min(s.n*bs, view.info.Size-s.first*bs)
				if err := d.readSpan(view, buf[:n], s.first*bs, bs, data); err != nil {
					return err
				}
				leaves := spanLeaves(buf[:n], bs, data)
				mu.Lock()
				for j, h := range leaves {
					setLeaf(t, s.first+int64(j), h)
				}
				mu.Unlock()
			}
			return nil
		})
	}
	return g.Wait()
}

// spanLeaves hashes a span's blocks; a nil entry is a zero block.
func spanLeaves(p []byte, bs int64, data []bool) []*hashtree.Hash {
	out := make([]*hashtree.Hash, 0, (int64(len(p))+bs-1)/bs)
	for j := int64(0); j*bs < int64(len(p)); j++ {
		blk := p[j*bs : min((j+1)*bs, int64(len(p)))]
		if !data[j] || hashtree.IsZero(blk) {
			out = append(out, nil)
			continue
		}
		h := hashtree.LeafHash(blk, int(bs))
		out = append(out, &h)
	}
	return out
}

func setLeaf(t *hashtree.Tree, b int64, h *hashtree.Hash) {
	if h == nil {
		_ = t.SetZero(b)
	} else {
		_ = t.Set(b, *h)
	}
}

// readSpan reads [off, off+len(p)) of the snapshot into p, reading only
// what a layer holds: a zeroed run and a hole of the flat bottom are
// cleared, not read. data[j] reports whether block j of the span got any
// bytes from a file. Like ReadAt, it holds the shared barrier.
func (d *Disk) readSpan(s *Snapshot, p []byte, off, bs int64, data []bool) error {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	chain, sm, err := s.chainLocked()
	if err != nil {
		return err
	}
	if err := checkRange(off, int64(len(p)), sm.Size); err != nil {
		return err
	}
	clear(data)
	mark := func(a, b int64) {
		d.trees.read.Add(b - a)
		for j := (a - off) / bs; j <= (b-1-off)/bs; j++ {
			data[j] = true
		}
	}
	end := off + int64(len(p))
	g0, g1 := d.grains(off, int64(len(p)))
	for _, r := range resolve(chain, g0, g1) {
		a, b := max(off, int64(r.g0)*d.grain), min(end, int64(r.g1)*d.grain)
		switch {
		case r.st == zeroed:
			clear(p[a-off : b-off])
		case r.src > 0: // a layer holds exactly the grains it maps
			if err := fsutil.ReadFull(chain[r.src].f, p[a-off:b-off], a); err != nil {
				return err
			}
			mark(a, b)
		default:
			if err := readFlat(chain[0].f, p[a-off:b-off], a, mark); err != nil {
				return err
			}
		}
	}
	return nil
}

// readFlat reads [a, a+len(p)) of a flat (possibly sparse) file: its
// data extents only, its holes cleared; mark is told the data ranges.
func readFlat(f vfs.File, p []byte, a int64, mark func(a, b int64)) error {
	ext, err := vfs.Extents(f, a, int64(len(p)))
	if err != nil {
		return err
	}
	for _, e := range ext {
		q := p[e.Off-a : e.Off-a+e.Len]
		if !e.Data {
			clear(q)
			continue
		}
		if err := fsutil.ReadFull(f, q, e.Off); err != nil {
			return err
		}
		mark(e.Off, e.Off+e.Len)
	}
	return nil
}

package hashtree

import (
	"errors"
	"fmt"
	"slices"
)

// PageLeaves is how many leaves a page holds: 2^10, so a full page's top
// is a node of the whole tree and pages can be updated one by one.
const (
	PageShift  = 10
	PageLeaves = 1 << PageShift
)

// Errors of the package.
var (
	ErrBlockSize = errors.New("hashtree: block size must be a power of two from 512 B to 16 MiB")
	ErrRange     = errors.New("hashtree: leaf index out of range")
	ErrCorrupt   = errors.New("hashtree: corrupt encoded tree")
)

// page is dense or sparse (sparse.go). Dense, it holds its leaves and
// every node above them, levels[0] being the leaves and the last level
// its top. Sparse (levels nil), it holds its leaves that are not the
// zero-block leaf and its top.
type page struct {
	levels [][]Hash
	dirty  []int // leaf indexes set since the levels (or top) were last updated
	sparse []sparseLeaf
	top    Hash // sparse only
}

// Tree is the hash tree of one image. The zero value is not usable; a
// Tree is not safe for concurrent use (the engine holds its own lock).
type Tree struct {
	size      int64
	blockSize int
	leaves    int64
	pages     []*page // nil: every leaf of the page is a zero leaf
	shared    []bool  // the page is shared with a clone: copy before writing
	dirty     []int   // pages whose top changed since upper was built
	upper     [][]Hash
	upperOK   bool
	zeroTops  map[int]Hash     // leaves in a page -> top of that many zero leaves
	zeroPages map[int][][]Hash // leaves in a page -> levels of that many zero leaves
}

// ValidBlockSize reports whether blockSize is allowed.
func ValidBlockSize(blockSize int) bool {
	return blockSize >= 512 && blockSize <= 16<<20 && blockSize&(blockSize-1) == 0
}

// New returns the tree of an all-zero image of size bytes (a new thin disk).
func New(size int64, blockSize int) (*Tree, error) {
	if !ValidBlockSize(blockSize) {
		return nil, fmt.Errorf("%w: %d", ErrBlockSize, blockSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrRange, size)
	}
	t := &Tree{blockSize: blockSize, zeroTops: map[int]Hash{}}
	t.setSize(size)
	return t, nil
}

func (t *Tree) setSize(size int64) {
	t.size = size
	t.leaves = (size + int64(t.blockSize) - 1) / int64(t.blockSize)
	n := int((t.leaves + PageLeaves - 1) / PageLeaves)
	keep := min(len(t.pages), n)
	t.pages = slices.Grow(t.pages[:keep], n)[:n]
	t.shared = slices.Grow(t.shared[:keep], n)[:n]
	clear(t.pages[keep:]) // a shrink left old pages in the backing array
	clear(t.shared[keep:])
	t.upperOK = false
}

// Size is the image size in bytes.
func (t *Tree) Size() int64 { return t.size }

// BlockSize is the leaf unit in bytes.
func (t *Tree) BlockSize() int { return t.blockSize }

// Leaves is the number of leaves.
func (t *Tree) Leaves() int64 { return t.leaves }

// PageCount is the number of pages (H4), stored or not.
func (t *Tree) PageCount() int { return len(t.pages) }

// pageLen is how many leaves page p holds (the last may be partial).
func (t *Tree) pageLen(p int) int {
	return int(min(t.leaves-int64(p)*PageLeaves, PageLeaves))
}

// Leaf returns leaf i.
func (t *Tree) Leaf(i int64) (Hash, error) {
	if i < 0 || i >= t.leaves {
		return Hash{}, fmt.Errorf("%w: %d of %d", ErrRange, i, t.leaves)
	}
	pg := t.pages[i>>PageShift]
	if pg == nil {
		return ZeroLeaf(t.blockSize), nil
	}
	return t.pageLeaf(pg, int(i&(PageLeaves-1))), nil
}

// Set makes h leaf i. Nodes above it are updated when Root is next asked.
func (t *Tree) Set(i int64, h Hash) error {
	if i < 0 || i >= t.leaves {
		return fmt.Errorf("%w: %d of %d", ErrRange, i, t.leaves)
	}
	p := int(i >> PageShift)
	pg := t.writablePage(p)
	j := int(i & (PageLeaves - 1))
	if pg.levels == nil {
		if !t.setSparse(pg, j, h) {
			return nil
		}
		if len(pg.sparse) > sparseMax {
			t.densify(pg, t.pageLen(p)) // levels now up to date: j is not dirty
			t.markDirty(p, pg, -1)
			return nil
		}
	} else {
		if pg.levels[0][j] == h {
			return nil
		}
		pg.levels[0][j] = h
	}
	t.markDirty(p, pg, j)
	return nil
}

// markDirty records that page p changed (leaf j of a dense page; -1: the
// page's nodes are up to date, only its top moved).
func (t *Tree) markDirty(p int, pg *page, j int) {
	if len(pg.dirty) == 0 {
		t.dirty = append(t.dirty, p)
	}
	if j < 0 {
		j = 0 // recomputing a node of an up-to-date page changes nothing
	}
	pg.dirty = append(pg.dirty, j)
}

// SetZero makes leaf i a zero leaf (a hole, a trim, a write of zeroes).
func (t *Tree) SetZero(i int64) error {
	if i >= 0 && i < t.leaves && t.pages[i>>PageShift] == nil {
		return nil // already zero: do not materialize the page
	}
	return t.Set(i, ZeroLeaf(t.blockSize))
}

// cloneLevels is a deep copy of a page's levels.
func cloneLevels(levels [][]Hash) [][]Hash {
	out := make([][]Hash, len(levels))
	for k, l := range levels {
		out[k] = slices.Clone(l)
	}
	return out
}

// zeroLevels are the levels of a page of n zero-block leaves, computed
// once per tree and length: a page materialized by its first write is a
// copy (64 KiB) instead of 1023 node hashes.
func (t *Tree) zeroLevels(n int) [][]Hash {
	if l, ok := t.zeroPages[n]; ok {
		return l
	}
	leaves := make([]Hash, n)
	z := ZeroLeaf(t.blockSize)
	for i := range leaves {
		leaves[i] = z
	}
	l := buildLevels(leaves)
	if t.zeroPages == nil {
		t.zeroPages = map[int][][]Hash{}
	}
	t.zeroPages[n] = l
	return l
}

// writablePage returns page p, built from zero leaves if absent and
// copied first if a clone shares it.
func (t *Tree) writablePage(p int) *page {
	pg := t.pages[p]
	switch {
	case pg == nil:
		pg = &page{top: t.zeroTop(t.pageLen(p))}
	case t.shared[p] && pg.levels == nil:
		pg = &page{sparse: slices.Clone(pg.sparse), top: pg.top}
	case t.shared[p]:
		pg = &page{levels: cloneLevels(pg.levels)}
	default:
		return pg
	}
	t.pages[p], t.shared[p] = pg, false
	return pg
}

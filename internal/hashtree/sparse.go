package hashtree

import (
	"math/bits"
	"slices"
	"sort"
)

// A page starts sparse: it keeps only its leaves that are not the
// zero-block leaf, sorted by offset, and its top, computed over
// precomputed tops of all-zero subtrees. 1% of a 1 TiB disk's blocks
// changed at random touch most pages with a few leaves each: sparse, the
// tree holds 36 bytes a leaf instead of 64 KiB a page, and a page's top
// costs ~10 node hashes a leaf instead of copying a zero page. A page
// with more than sparseMax such leaves becomes dense (levels).
const sparseMax = 64

// sparseLeaf is one listed leaf of a sparse page.
type sparseLeaf struct {
	off  uint16
	leaf Hash
}

// sparseFind returns the position of off in s and whether it is there.
func sparseFind(s []sparseLeaf, off int) (int, bool) {
	i := sort.Search(len(s), func(k int) bool { return int(s[k].off) >= off })
	return i, i < len(s) && int(s[i].off) == off
}

// leaf returns leaf j of a page (dense or sparse).
func (t *Tree) pageLeaf(pg *page, j int) Hash {
	if pg.levels != nil {
		return pg.levels[0][j]
	}
	if i, ok := sparseFind(pg.sparse, j); ok {
		return pg.sparse[i].leaf
	}
	return ZeroLeaf(t.blockSize)
}

// setSparse sets leaf j of a sparse page; it reports whether the leaf
// changed. A zero-block leaf is removed from the list.
func (t *Tree) setSparse(pg *page, j int, h Hash) bool {
	i, ok := sparseFind(pg.sparse, j)
	zero := h == ZeroLeaf(t.blockSize)
	switch {
	case ok && zero:
		pg.sparse = slices.Delete(pg.sparse, i, i+1)
	case ok:
		if pg.sparse[i].leaf == h {
			return false
		}
		pg.sparse[i].leaf = h
	case zero:
		return false
	default:
		pg.sparse = slices.Insert(pg.sparse, i, sparseLeaf{uint16(j), h})
	}
	return true
}

// densify turns a sparse page of n leaves into levels.
func (t *Tree) densify(pg *page, n int) {
	levels := cloneLevels(t.zeroLevels(n))
	changed := make([]int, 0, len(pg.sparse))
	for _, s := range pg.sparse {
		levels[0][s.off] = s.leaf
		changed = append(changed, int(s.off))
	}
	updateLevels(levels, changed)
	pg.levels, pg.sparse = levels, nil
}

// sparseTop is the top of leaves [lo, hi) of a sparse page whose listed
// leaves in that range are s: the left subtree holds the largest power
// of two below the count (H2), a range without listed leaves is the top
// of that many zero leaves.
func (t *Tree) sparseTop(s []sparseLeaf, lo, hi int) Hash {
	if len(s) == 0 {
		return t.zeroTop(hi - lo)
	}
	if hi-lo == 1 {
		return s[0].leaf
	}
	mid := lo + 1<<(bits.Len(uint(hi-lo-1))-1)
	i, _ := sparseFind(s, mid)
	return NodeHash(t.sparseTop(s[:i], lo, mid), t.sparseTop(s[i:], mid, hi))
}

// zeroTop is the top of n zero-block leaves (n >= 1), memoized.
func (t *Tree) zeroTop(n int) Hash {
	if n == 1 {
		return ZeroLeaf(t.blockSize)
	}
	if h, ok := t.zeroTops[n]; ok {
		return h
	}
	k := 1 << (bits.Len(uint(n-1)) - 1)
	h := NodeHash(t.zeroTop(k), t.zeroTop(n-k))
	t.zeroTops[n] = h
	return h
}

// fullLeaves returns a page's leaves as one slice (a copy for a sparse page).
func (t *Tree) fullLeaves(pg *page, n int) []Hash {
	if pg.levels != nil {
		return pg.levels[0]
	}
	out := make([]Hash, n)
	z := ZeroLeaf(t.blockSize)
	for i := range out {
		out[i] = z
	}
	for _, s := range pg.sparse {
		out[s.off] = s.leaf
	}
	return out
}

// fullLeavesOrSparse lists a page's leaves with their offsets: a sparse
// page's listed ones, or every leaf of a dense page.
func (t *Tree) fullLeavesOrSparse(pg *page) []sparseLeaf {
	if pg.levels == nil {
		return pg.sparse
	}
	out := make([]sparseLeaf, len(pg.levels[0]))
	for i, l := range pg.levels[0] {
		out[i] = sparseLeaf{uint16(i), l}
	}
	return out
}

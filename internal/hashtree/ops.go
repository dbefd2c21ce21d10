package hashtree

import (
	"fmt"
	"slices"
)

// Clone returns a tree equal to t that shares its pages; either side
// copies a shared page before writing it, so a snapshot's tree costs
// nothing until the live tree changes.
func (t *Tree) Clone() *Tree {
	t.Top() // no pending updates may be shared
	c := &Tree{
		size: t.size, blockSize: t.blockSize, leaves: t.leaves,
		pages:    slices.Clone(t.pages),
		shared:   make([]bool, len(t.pages)),
		zeroTops: map[int]Hash{},
	}
	for p, pg := range t.pages {
		if pg != nil {
			t.shared[p], c.shared[p] = true, true
		}
	}
	return c
}

// Resize makes the image size bytes: new blocks are zero leaves, blocks
// past the end are dropped, and the last block keeps its leaf (the
// caller sets it again if its bytes past the old end were not zero).
func (t *Tree) Resize(size int64) error {
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrRange, size)
	}
	t.Top()
	oldPages := len(t.pages)
	t.setSize(size)
	// The old last page and the new last page may change length.
	for _, p := range []int{oldPages - 1, len(t.pages) - 1} {
		if p >= 0 && p < len(t.pages) {
			t.refitPage(p)
		}
	}
	t.dirty = t.dirty[:0]
	return nil
}

// refitPage rebuilds page p for its current length.
func (t *Tree) refitPage(p int) {
	pg := t.pages[p]
	if pg == nil {
		return
	}
	n := t.pageLen(p)
	if pg.levels == nil {
		i, _ := sparseFind(pg.sparse, n) // leaves past the new end go
		cp := &page{sparse: slices.Clone(pg.sparse[:i])}
		cp.top = t.sparseTop(cp.sparse, 0, n)
		t.pages[p], t.shared[p] = cp, false
		return
	}
	leaves := pg.levels[0]
	if len(leaves) == n {
		return
	}
	nl := make([]Hash, n)
	copy(nl, leaves)
	z := ZeroLeaf(t.blockSize)
	for i := len(leaves); i < n; i++ {
		nl[i] = z
	}
	t.pages[p], t.shared[p] = &page{levels: buildLevels(nl)}, false
}

// Diff returns the indexes of the leaves where a and b differ, at most
// limit of them (limit <= 0: all). Trees of other sizes or block sizes
// differ as a whole: Diff returns ErrRange.
func Diff(a, b *Tree, limit int) ([]int64, error) {
	if a.size != b.size || a.blockSize != b.blockSize {
		return nil, fmt.Errorf("%w: trees of %d/%d and %d/%d bytes", ErrRange,
			a.size, a.blockSize, b.size, b.blockSize)
	}
	var out []int64
	for p := range a.pages {
		if a.pages[p] == b.pages[p] {
			continue // shared or both zero
		}
		for j := 0; j < a.pageLen(p); j++ {
			i := int64(p)<<PageShift + int64(j)
			la, _ := a.Leaf(i)
			lb, _ := b.Leaf(i)
			if la != lb {
				out = append(out, i)
				if limit > 0 && len(out) >= limit {
					return out, nil
				}
			}
		}
	}
	return out, nil
}

// PageLeaves returns the leaves of page p, or nil for a page of zero
// leaves; the slice is the tree's own: do not modify it.
func (t *Tree) PageLeavesOf(p int) []Hash {
	if pg := t.pages[p]; pg != nil {
		return t.fullLeaves(pg, t.pageLen(p))
	}
	return nil
}

// SetPage replaces the leaves of page p (nil: all zero leaves), as when
// loading a stored page.
func (t *Tree) SetPage(p int, leaves []Hash) error {
	if p < 0 || p >= len(t.pages) {
		return fmt.Errorf("%w: page %d of %d", ErrRange, p, len(t.pages))
	}
	if leaves != nil && len(leaves) != t.pageLen(p) {
		return fmt.Errorf("%w: page %d has %d leaves, want %d", ErrRange, p, len(leaves), t.pageLen(p))
	}
	t.Top()
	if leaves == nil {
		t.pages[p] = nil
	} else {
		t.pages[p] = &page{levels: buildLevels(slices.Clone(leaves))}
	}
	t.shared[p] = false
	t.upperOK = false
	return nil
}

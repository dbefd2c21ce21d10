package hashtree

// Root returns the image's root (H3), updating the nodes above the
// leaves set since the last call: the cost grows with what changed.
func (t *Tree) Root() Hash {
	return RootHash(t.Top(), t.size, t.blockSize)
}

// Top returns the top node of the tree.
func (t *Tree) Top() Hash {
	t.flushPages()
	if !t.upperOK {
		tops := make([]Hash, len(t.pages))
		for p := range t.pages {
			tops[p] = t.pageTop(p)
		}
		t.upper = buildLevels(tops)
		t.upperOK = true
	} else if len(t.dirty) > 0 {
		for _, p := range t.dirty {
			t.upper[0][p] = t.pageTop(p)
		}
		updateLevels(t.upper, t.dirty)
	}
	t.dirty = t.dirty[:0]
	return top(t.upper)
}

// flushPages brings the nodes of every changed page up to date.
func (t *Tree) flushPages() {
	for _, p := range t.dirty {
		pg := t.pages[p]
		if pg.levels == nil {
			pg.top = t.sparseTop(pg.sparse, 0, t.pageLen(p))
		} else {
			updateLevels(pg.levels, pg.dirty)
		}
		pg.dirty = pg.dirty[:0]
	}
}

// pageTop is page p's top node; a page not stored is all zero leaves.
func (t *Tree) pageTop(p int) Hash {
	pg := t.pages[p]
	switch {
	case pg == nil:
		return t.zeroTop(t.pageLen(p))
	case pg.levels == nil:
		return pg.top
	}
	return top(pg.levels)
}

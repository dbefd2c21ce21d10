package hashtree

import "slices"

// buildLevels builds every level above leaves (left balanced: a node
// without a sibling is carried up unchanged, H2).
func buildLevels(leaves []Hash) [][]Hash {
	levels := [][]Hash{leaves}
	for cur := leaves; len(cur) > 1; {
		next := make([]Hash, (len(cur)+1)/2)
		for j := range next {
			next[j] = parent(cur, j)
		}
		levels = append(levels, next)
		cur = next
	}
	return levels
}

// parent is node j of the level above cur.
func parent(cur []Hash, j int) Hash {
	if 2*j+1 < len(cur) {
		return NodeHash(cur[2*j], cur[2*j+1])
	}
	return cur[2*j]
}

// updateLevels recomputes the nodes above the changed indexes of
// levels[0], level by level, each parent once.
func updateLevels(levels [][]Hash, changed []int) {
	idx := slices.Clone(changed)
	for k := 1; k < len(levels); k++ {
		for i := range idx {
			idx[i] >>= 1
		}
		slices.Sort(idx)
		idx = slices.Compact(idx)
		for _, j := range idx {
			levels[k][j] = parent(levels[k-1], j)
		}
	}
}

// top is the single node of the last level, or the zero hash if none.
func top(levels [][]Hash) Hash {
	last := levels[len(levels)-1]
	if len(last) == 0 {
		return Hash{}
	}
	return last[0]
}

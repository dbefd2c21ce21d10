package hashtree

import "math/bits"

// LeavesTop is the top of a run of leaves (H2: the root of their left
// balanced tree), hashing only above the leaves that are not the
// zero-block leaf: a subtree of zero leaves is the memoized top of that
// many, as sparse pages do. A backup's tree groups of a large thin disk
// hold a few such leaves among 16,384; building every level of each
// (hashtree.Tree.SetPage) was 60% of an incremental's CPU there
// (docs/performance.md, "Scattered incrementals on large disks"). An
// empty run has the zero hash, as an empty tree's top.
func LeavesTop(leaves []Hash, blockSize int) Hash {
	if len(leaves) == 0 {
		return Hash{}
	}
	t := Tree{blockSize: blockSize, zeroTops: map[int]Hash{}}
	h, _ := t.leavesTop(leaves, ZeroLeaf(blockSize))
	return h
}

// leavesTop returns the top of leaves (len >= 1) and whether they are
// all the zero leaf z.
func (t *Tree) leavesTop(leaves []Hash, z Hash) (Hash, bool) {
	if len(leaves) == 1 {
		return leaves[0], leaves[0] == z
	}
	mid := 1 << (bits.Len(uint(len(leaves)-1)) - 1)
	l, lz := t.leavesTop(leaves[:mid], z)
	r, rz := t.leavesTop(leaves[mid:], z)
	if lz && rz {
		return t.zeroTop(len(leaves)), true
	}
	return NodeHash(l, r), false
}

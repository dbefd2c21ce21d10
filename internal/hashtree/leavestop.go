package hashtree

import (
	"math/bits"
	"sync"
)

// LeavesTop is the top of a run of leaves (H2: the root of their left
// balanced tree), hashing only above the leaves that are not the
// zero-block leaf: a whole subtree of zero leaves (a power of two of
// them) has a top known in advance, as sparse pages use. A backup's tree
// groups of a large thin disk hold a few such leaves among 4096;
// building every level of each (Tree.SetPage) was 60% of an incremental's
// CPU there (docs/performance.md, "Scattered incrementals on large
// disks"). An empty run has the zero hash, as an empty tree's top.
func LeavesTop(leaves []Hash, blockSize int) Hash {
	if len(leaves) == 0 {
		return Hash{}
	}
	h, _ := leavesTop(leaves, zeroPowers(blockSize))
	return h
}

// leavesTop returns the top of leaves (len >= 1) and whether they are
// all the zero leaf (zp[0]).
func leavesTop(leaves []Hash, zp *[64]Hash) (Hash, bool) {
	n := len(leaves)
	if n == 1 {
		return leaves[0], leaves[0] == zp[0]
	}
	mid := 1 << (bits.Len(uint(n-1)) - 1)
	l, lz := leavesTop(leaves[:mid], zp)
	r, rz := leavesTop(leaves[mid:], zp)
	if lz && rz && n&(n-1) == 0 {
		return zp[bits.TrailingZeros(uint(n))], true
	}
	return NodeHash(l, r), lz && rz
}

var zeroPowerTops sync.Map // blockSize -> *[64]Hash

// zeroPowers returns the tops of 2^k zero-block leaves, k < 64.
func zeroPowers(blockSize int) *[64]Hash {
	if p, ok := zeroPowerTops.Load(blockSize); ok {
		return p.(*[64]Hash)
	}
	p := new([64]Hash)
	p[0] = ZeroLeaf(blockSize)
	for k := 1; k < len(p); k++ {
		p[k] = NodeHash(p[k-1], p[k-1])
	}
	zeroPowerTops.Store(blockSize, p)
	return p
}

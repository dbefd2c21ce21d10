package hashtree

import (
	"math/bits"
	"slices"
	"sort"
)

// SparseLeaves is a run of leaves that keeps only those that are not the
// zero-block leaf (data leaves), sorted by offset; every other leaf is
// the zero-block leaf. A repository point's tree group of a large thin
// disk holds a few data leaves among 4096: dense, 8,192 groups of a
// 2 TiB disk were 1 GiB of memory for a few MiB of leaves
// (docs/performance.md, "Sparse tree groups"). Past denseAt data leaves
// the run turns dense, so random sets into a full group cost no
// insertions into a long list. Not safe for concurrent use.
type SparseLeaves struct {
	n, bs int
	zero  Hash     // the zero-block leaf of bs
	off   []uint16 // offsets of the data leaves, strictly increasing
	leaf  []Hash   // the data leaves, by off
	dense []Hash   // every leaf, once dense (off and leaf are then nil)
}

// maxSparseLen bounds a run's length: offsets are 16 bits.
const maxSparseLen = 1 << 16

// denseAt is the data-leaf count past which a run turns dense: a
// sparse leaf costs 34 bytes, a dense run 32 a leaf, so a run an eighth
// full costs a quarter of its dense size and inserts stay short.
func denseAt(n int) int { return max(n/8, 16) }

// NewSparseLeaves is a run of n zero-block leaves (n <= 65536).
func NewSparseLeaves(n, blockSize int) *SparseLeaves {
	if n < 0 || n > maxSparseLen {
		panic("hashtree: sparse run length out of range")
	}
	return &SparseLeaves{n: n, bs: blockSize, zero: ZeroLeaf(blockSize)}
}

// Len is the run's leaf count.
func (s *SparseLeaves) Len() int { return s.n }

// BlockSize is the leaves' block size.
func (s *SparseLeaves) BlockSize() int { return s.bs }

// Bytes is about what the run holds in memory.
func (s *SparseLeaves) Bytes() int64 {
	if s.dense != nil {
		return int64(len(s.dense)) * 32
	}
	return int64(cap(s.leaf))*32 + int64(cap(s.off))*2
}

// find returns the position of offset i in the sparse list.
func (s *SparseLeaves) find(i int) (int, bool) {
	k := sort.Search(len(s.off), func(k int) bool { return int(s.off[k]) >= i })
	return k, k < len(s.off) && int(s.off[k]) == i
}

// At returns leaf i (0 <= i < Len).
func (s *SparseLeaves) At(i int) Hash {
	if s.dense != nil {
		return s.dense[i]
	}
	if k, ok := s.find(i); ok {
		return s.leaf[k]
	}
	return s.zero
}

// Set sets leaf i (0 <= i < Len); a zero-block leaf leaves the list.
func (s *SparseLeaves) Set(i int, h Hash) {
	if s.dense != nil {
		s.dense[i] = h
		return
	}
	k, ok := s.find(i)
	zero := h == s.zero
	switch {
	case ok && zero:
		s.off = slices.Delete(s.off, k, k+1)
		s.leaf = slices.Delete(s.leaf, k, k+1)
	case ok:
		s.leaf[k] = h
	case zero:
	case k == len(s.off): // the copy sets leaves in ascending order
		s.off, s.leaf = append(s.off, uint16(i)), append(s.leaf, h)
	default:
		s.off = slices.Insert(s.off, k, uint16(i))
		s.leaf = slices.Insert(s.leaf, k, h)
	}
	if len(s.off) > denseAt(s.n) {
		s.densify()
	}
}

func (s *SparseLeaves) densify() {
	s.dense, s.off, s.leaf = s.expand(), nil, nil
}

// expand returns the sparse leaves as a dense slice.
func (s *SparseLeaves) expand() []Hash {
	d := make([]Hash, s.n)
	z := s.zero
	for i := range d {
		d[i] = z
	}
	for k, o := range s.off {
		d[o] = s.leaf[k]
	}
	return d
}

// Data calls f with each data leaf (not the zero-block leaf) in
// ascending offset order.
func (s *SparseLeaves) Data(f func(i int, h Hash)) {
	if s.dense == nil {
		for k, o := range s.off {
			f(int(o), s.leaf[k])
		}
		return
	}
	z := s.zero
	for i, h := range s.dense {
		if h != z {
			f(i, h)
		}
	}
}

// DataLen is the number of data leaves.
func (s *SparseLeaves) DataLen() int {
	if s.dense == nil {
		return len(s.off)
	}
	n := 0
	s.Data(func(int, Hash) { n++ })
	return n
}

// Dense returns every leaf (a copy when sparse).
func (s *SparseLeaves) Dense() []Hash {
	if s.dense != nil {
		return s.dense
	}
	return s.expand()
}

// Top is the run's top (H2, as LeavesTop of every leaf): hashed only
// above the data leaves, every all-zero subtree's top from a table.
func (s *SparseLeaves) Top() Hash {
	if s.n == 0 {
		return Hash{}
	}
	if s.dense != nil {
		return LeavesTop(s.dense, s.bs)
	}
	return sparseRunTop(s.off, s.leaf, 0, s.n, zeroPowers(s.bs))
}

// sparseRunTop is the top of leaves [lo, hi) whose data leaves are
// (off, leaf): the left subtree holds the largest power of two below the
// count (H2); a range without data leaves is the top of that many zero
// leaves.
func sparseRunTop(off []uint16, leaf []Hash, lo, hi int, zp *[64]Hash) Hash {
	if len(off) == 0 {
		return zeroRunTop(hi-lo, zp)
	}
	if hi-lo == 1 {
		return leaf[0]
	}
	mid := lo + 1<<(bits.Len(uint(hi-lo-1))-1)
	k := sort.Search(len(off), func(k int) bool { return int(off[k]) >= mid })
	return NodeHash(sparseRunTop(off[:k], leaf[:k], lo, mid, zp), sparseRunTop(off[k:], leaf[k:], mid, hi, zp))
}

// zeroRunTop is the top of n >= 1 zero-block leaves: a power of two from
// the table, any other count split as H2 splits it.
func zeroRunTop(n int, zp *[64]Hash) Hash {
	if n&(n-1) == 0 {
		return zp[bits.TrailingZeros(uint(n))]
	}
	k := 1 << (bits.Len(uint(n-1)) - 1)
	return NodeHash(zp[bits.TrailingZeros(uint(k))], zeroRunTop(n-k, zp))
}

package hashtree

import (
	"encoding/binary"
	"sync"

	"github.com/zeebo/blake3"
)

// Hash is a BLAKE3-256 digest: a leaf, a node, a top or a root.
type Hash [32]byte

// Domain bytes keep leaves, nodes and roots apart (docs/format.md H1–H3),
// so no block can be passed off as a pair of nodes.
const (
	domainLeaf byte = 0x00
	domainNode byte = 0x01
	domainRoot byte = 0x02
)

const rootContext = "blockwise-hashtree-v1"

// LeafHash is the leaf of one block (H1). A block shorter than blockSize
// (the image's last) is hashed as if padded with zeroes to blockSize.
func LeafHash(block []byte, blockSize int) Hash {
	h := blake3.New()
	h.Write([]byte{domainLeaf})
	h.Write(block)
	if pad := blockSize - len(block); pad > 0 {
		writeZeroes(h, pad)
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

var zeroBuf [64 << 10]byte

func writeZeroes(h *blake3.Hasher, n int) {
	for n > 0 {
		k := min(n, len(zeroBuf))
		h.Write(zeroBuf[:k])
		n -= k
	}
}

// NodeHash joins two children (H2).
func NodeHash(left, right Hash) Hash {
	var buf [65]byte
	buf[0] = domainNode
	copy(buf[1:], left[:])
	copy(buf[33:], right[:])
	return blake3.Sum256(buf[:])
}

// RootHash names an image by its top node, size and block size (H3).
func RootHash(top Hash, size int64, blockSize int) Hash {
	buf := make([]byte, 0, 1+len(rootContext)+8+4+32)
	buf = append(buf, domainRoot)
	buf = append(buf, rootContext...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(size))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(blockSize))
	buf = append(buf, top[:]...)
	return blake3.Sum256(buf)
}

var zeroLeaves sync.Map // blockSize -> Hash

// ZeroLeaf is the leaf of an all-zero block (and of a hole).
func ZeroLeaf(blockSize int) Hash {
	if h, ok := zeroLeaves.Load(blockSize); ok {
		return h.(Hash)
	}
	h := LeafHash(nil, blockSize)
	zeroLeaves.Store(blockSize, h)
	return h
}

// IsZero reports whether b is all zero bytes; callers use it to skip
// hashing blocks that read as holes.
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

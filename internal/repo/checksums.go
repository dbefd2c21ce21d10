package repo

import (
	"context"
	"encoding/binary"
	"math/bits"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/zeebo/blake3"
)

// leafSums let check --read-data prove the points' trees (T6) from the
// pack check's single read of each chunk: as a pack is verified, each
// chunk's leaves at every tree block size the points use are summed,
// and the proof compares a slot's leaves in the tree with the sum of
// its chunk instead of loading the chunk again. The sums live in an
// index of their own (the compact table that spills sorted runs to
// disk past Options.IndexMemoryBlobs, spill.go), so memory stays
// bounded however large the repository: a chunk's entry, under the
// blob type sumType(B), holds the first 12 bytes of
// BLAKE3(le32 B ‖ leaves) in the offset, stored and raw fields.
type leafSums struct {
	bss []int
	x   *index
	ord uint32 // the one pack the entries name (none)
}

type leafSum [12]byte

func (r *Repository) newLeafSums(bss []int) *leafSums {
	x := r.newIndex()
	ord, _ := x.newPack(ID{})
	return &leafSums{bss: bss, x: x, ord: ord}
}

func (s *leafSums) close() { s.x.close() }

// sumType keeps the sums of each block size apart from each other.
func sumType(bs int) BlobType { return BlobType(0x80 | bits.Len(uint(bs))) }

// add sums chunk id's leaves (plain is its plaintext).
func (s *leafSums) add(id ID, plain []byte) {
	if s == nil {
		return
	}
	for _, bs := range s.bss {
		n := (len(plain) + bs - 1) / bs
		leaves := make([]hashtree.Hash, n)
		for k := range leaves {
			leaves[k] = hashtree.LeafHash(plain[k*bs:min((k+1)*bs, len(plain))], bs)
		}
		sum := sumLeaves(leaves, bs)
		e := packEntry{Type: sumType(bs), ID: id, Offset: binary.LittleEndian.Uint32(sum[0:]),
			Stored: binary.LittleEndian.Uint32(sum[4:]), Raw: binary.LittleEndian.Uint32(sum[8:])}
		s.x.mu.Lock()
		s.x.addEntry(s.ord, &e)
		s.x.mu.Unlock()
	}
}

// get returns the sum of chunk id's leaves at block size bs, if the
// pack check read it.
func (s *leafSums) get(id ID, bs int) (leafSum, bool) {
	var sum leafSum
	loc, ok := s.x.lookup(sumType(bs), id)
	if !ok {
		return sum, false
	}
	binary.LittleEndian.PutUint32(sum[0:], loc.Offset)
	binary.LittleEndian.PutUint32(sum[4:], loc.Stored)
	binary.LittleEndian.PutUint32(sum[8:], loc.Raw)
	return sum, true
}

func sumLeaves(leaves []hashtree.Hash, bs int) leafSum {
	h := blake3.New()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(bs))
	h.Write(b[:])
	for _, l := range leaves {
		h.Write(l[:])
	}
	var sum leafSum
	copy(sum[:], h.Sum(nil))
	return sum
}

// treeBlockSizes are the block sizes of the points' trees that check
// can prove (the chunk size a multiple of them). It loads the manifests
// once more; those that fail to load are reported by checkManifests.
func (r *Repository) treeBlockSizes(ctx context.Context) ([]int, error) {
	names, err := r.listNames(ctx, backend.Manifests)
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	for _, n := range names {
		id, err := ParseID(n)
		if err != nil {
			continue
		}
		m, err := r.LoadManifest(ctx, id)
		if err != nil || m.Tree == nil || m.Tree.BlockSize == 0 || m.ChunkSize%m.Tree.BlockSize != 0 {
			continue
		}
		if bs := int(m.Tree.BlockSize); !seen[bs] {
			seen[bs] = true
			out = append(out, bs)
		}
	}
	return out, nil
}

package repo

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// blobSet holds blobs by 62 bits of their type and ID, in an open-
// addressing table of uint64 kept at most 3/4 full: 8 bytes a slot, 11–21
// bytes a blob, where the Go map it replaced took 20–40 (and twice that
// while it grew), which at 10 M chunks was most of prune's and stats'
// memory (docs/performance.md, "Repositories of millions of chunks"). It
// may say yes for a blob never added (a collision, about n/2⁶² likely per
// lookup among n blobs): prune only keeps what it holds, so such an error
// keeps a dead blob, and never drops a live one.
//
// A slot is 0 (empty) or the blob's key (bit 0 always set, so never 0)
// with bit 63 recording whether prune's sweep found the blob in an index
// file.
//
// A set made by newBlobCounts also keeps a count per blob (2 bytes a
// slot more; what passes 65535 goes to a map), for Stats: how many slots
// of the points hold it.
type blobSet struct {
	slots  []uint64
	counts []uint16          // by slot, nil unless counting
	over   map[uint64]uint64 // by key: what a count could not hold
	n      int
	seed   uint64 // per set: crafted IDs cannot pile into one probe chain
}

const blobSetFound = 1 << 63

// newBlobSet returns a set sized for about hint blobs without growing.
func newBlobSet(hint int) *blobSet {
	s := &blobSet{seed: rand.Uint64()}
	s.slots = make([]uint64, blobSetSize(hint))
	return s
}

// newBlobCounts returns a counting set sized for about hint blobs.
func newBlobCounts(hint int) *blobSet {
	s := newBlobSet(hint)
	s.counts = make([]uint16, len(s.slots))
	return s
}

// blobSetSize is the power of two that holds n keys at most 3/4 full.
func blobSetSize(n int) int {
	size := 1024
	for n*4 > size*3 {
		size *= 2
	}
	return size
}

func blobSetKey(t BlobType, id ID) uint64 {
	k := binary.LittleEndian.Uint64(id[:8]) ^ uint64(t)*0x9e3779b97f4a7c15
	return k&^blobSetFound | 1
}

// slot returns the position of k, or of the empty slot where it would go.
func (s *blobSet) slot(k uint64) int {
	mask := uint64(len(s.slots) - 1)
	h, _ := bits.Mul64(k^s.seed, 0x9e3779b97f4a7c15)
	for i := h & mask; ; i = (i + 1) & mask {
		if v := s.slots[i]; v == 0 || v&^blobSetFound == k {
			return int(i)
		}
	}
}

func (s *blobSet) add(t BlobType, id ID) { s.addN(t, id, 0) }

// addN adds the blob and, in a counting set, n to its count.
func (s *blobSet) addN(t BlobType, id ID, n uint32) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.grow()
	}
	k := blobSetKey(t, id)
	i := s.slot(k)
	if s.slots[i] == 0 {
		s.slots[i] = k
		s.n++
	}
	if s.counts == nil {
		return
	}
	if c := s.counts[i]; uint64(c)+uint64(n) > uint64(^uint16(0)) {
		if s.over == nil {
			s.over = map[uint64]uint64{}
		}
		s.over[k] += uint64(c) + uint64(n)
		s.counts[i] = 0
		return
	}
	s.counts[i] += uint16(n)
}

func (s *blobSet) grow() {
	old, oldCounts := s.slots, s.counts
	s.slots = make([]uint64, 2*len(old))
	if oldCounts != nil {
		s.counts = make([]uint16, len(s.slots))
	}
	for j, v := range old {
		if v != 0 {
			i := s.slot(v &^ blobSetFound)
			s.slots[i] = v
			if oldCounts != nil {
				s.counts[i] = oldCounts[j]
			}
		}
	}
}

func (s *blobSet) has(t BlobType, id ID) bool {
	return s.slots[s.slot(blobSetKey(t, id))] != 0
}

// indexed records that an index file names the blob and says whether it
// is in the set.
func (s *blobSet) indexed(t BlobType, id ID) bool {
	i := s.slot(blobSetKey(t, id))
	if s.slots[i] == 0 {
		return false
	}
	s.slots[i] |= blobSetFound
	return true
}

// indexedFirst is indexed for a counting set: it returns the blob's
// count, and ok only the first time the blob is found (a blob stored
// twice is counted once).
func (s *blobSet) indexedFirst(t BlobType, id ID) (count uint64, ok bool) {
	k := blobSetKey(t, id)
	i := s.slot(k)
	if v := s.slots[i]; v == 0 || v&blobSetFound != 0 {
		return 0, false
	}
	s.slots[i] |= blobSetFound
	return uint64(s.counts[i]) + s.over[k], true
}

// unindexed counts the blobs indexed was never called for.
func (s *blobSet) unindexed() int {
	n := 0
	for _, v := range s.slots {
		if v != 0 && v&blobSetFound == 0 {
			n++
		}
	}
	return n
}

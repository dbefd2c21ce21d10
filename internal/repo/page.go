package repo

import "fmt"

// A manifest's slot index is a two-level tree: the manifest holds a root
// list of page IDs; page i covers slots [i*PageSlots, (i+1)*PageSlots).
// Pages are blobs in packs, content-addressed like chunks, so a backup
// that leaves a page untouched reuses it by ID and an incremental writes
// only the pages it changed.
//
// Page body:
//
//	"BWPG" | version u8 | n u32 | bitmap [ceil(n/8)] | popcount × id [32]
//
// Bit i (LSB first) set means slot i holds the chunk whose ID comes next
// in order; clear means the slot reads as zeros. Zero slots cost a bit,
// not 32 bytes, so sparse disks have small pages.
const (
	pageMagic   = "BWPG"
	pageVersion = 1
)

func pageMaxSize(slots uint32) int { return 9 + int(slots+7)/8 + int(slots)*32 }

func encodePage(slots []ID) []byte {
	n := len(slots)
	b := append([]byte(pageMagic), pageVersion)
	b = putU32(b, uint32(n))
	bm := len(b)
	b = append(b, make([]byte, (n+7)/8)...)
	for i, id := range slots {
		if !id.IsZero() {
			b[bm+i/8] |= 1 << (i % 8)
			b = append(b, id[:]...)
		}
	}
	return b
}

// decodePage parses a page that must hold exactly want slots.
func decodePage(b []byte, want int) ([]ID, error) {
	slots := make([]ID, want)
	return slots, decodePageInto(b, slots)
}

// decodePageInto parses a page that must hold exactly len(dst) slots
// into dst, which must be all zero IDs (absent slots stay so): a writer
// decodes a parent's page straight into the page it will modify, instead
// of into a fresh 128 KiB slice copied over (a scattered incremental over
// a large disk decodes thousands of pages, and the extra slices were a
// quarter of its CPU in zeroing). Every caller's dst is fresh from make:
// clearing it again was 6% of such an incremental's CPU.
func decodePageInto(b []byte, dst []ID) error {
	return eachPageID(b, len(dst), func(i int, id ID) { dst[i] = id })
}

// eachPageID validates a page of want slots and calls fn for every
// slot that holds a chunk, in order, without building the slot list.
func eachPageID(b []byte, want int, fn func(slot int, id ID)) error {
	r := &reader{b: b}
	if string(r.take(4)) != pageMagic || r.u8() != pageVersion {
		return fmt.Errorf("page: bad magic or version: %w", ErrCorrupt)
	}
	n := int(r.u32())
	if r.err != nil || n != want {
		return fmt.Errorf("page: %d slots, want %d: %w", n, want, ErrCorrupt)
	}
	bm := r.take((n + 7) / 8)
	if r.err != nil {
		return r.err
	}
	for i := range n {
		if bm[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		id := r.id()
		if r.err != nil {
			return r.err
		}
		if id.IsZero() {
			return fmt.Errorf("page: slot %d has the zero id: %w", i, ErrCorrupt)
		}
		fn(i, id)
	}
	if n%8 != 0 && bm[len(bm)-1]>>(n%8) != 0 {
		return fmt.Errorf("page: bits set past slot count: %w", ErrCorrupt)
	}
	return r.done()
}

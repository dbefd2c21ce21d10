package repo

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"os"
	"slices"
	"sort"
	"sync"
)

// The index keeps at most Options.IndexMemoryBlobs blobs in its
// in-memory table; past that it sorts them into a run file in
// Options.IndexSpillDir and starts again, so a process's memory no longer grows
// with the repository: what stays in memory per spilled blob is a Bloom
// filter (10 bits) and one key per 4 KiB block of the run (~0.4 bytes),
// 3.3 bytes in all with the pack table (TestIndexSpilledBytesPerBlob)
// against ~60 in the table. A lookup the filter cannot rule out reads one
// block, or two when the blob's key starts a block.
//
// Run files are this process's own scratch: created, unlinked at once
// (nothing is left behind, even after kill -9) and rebuilt from the index
// files by every process that needs them. IndexSpillDir "" means
// os.TempDir(); the CLI points it at the user's cache directory, since
// /tmp is often memory-backed.

// A run record is an ientry: id[32] | pack u32 | offset u32 | stored u32 |
// raw u32 | type u8 | flags u8 | 2 bytes of padding.
const (
	runRecSize   = 52
	runBlockSize = 4096
	runPerBlock  = runBlockSize / runRecSize // 78
)

// spillRun is one sorted run of index entries on disk.
type spillRun struct {
	f     *os.File
	n     int
	first []runKey // first key of each block
	bloom bloom
	bufs  sync.Pool
}

type runKey struct {
	id  ID
	typ BlobType
}

func (a runKey) compare(b runKey) int {
	if c := bytes.Compare(a.id[:], b.id[:]); c != 0 {
		return c
	}
	return int(a.typ) - int(b.typ)
}

func (e *ientry) key() runKey { return runKey{e.id, e.typ} }

// writeRun writes ents as a run, in key order and, of equal keys, in
// the order added (so the first added stays first). It sorts positions,
// not the entries: Go's stable sort (insertion and in-place merges,
// O(n log² n) moves of 52-byte entries) was a third of opening a 10 M-chunk
// repository, and pdqsort with the position as tie-break is O(n log n)
// for 4 bytes an entry.
func writeRun(ents []ientry, seed maphash.Seed, dir string) (*spillRun, error) {
	order := make([]uint32, len(ents))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int {
		if c := compareEnt(&ents[a], &ents[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	w, err := newRunWriter(len(ents), seed, dir)
	if err != nil {
		return nil, err
	}
	for _, i := range order {
		w.add(&ents[i])
	}
	return w.finish()
}

// compareEnt orders entries by key, as runKey.compare.
func compareEnt(a, b *ientry) int {
	if c := bytes.Compare(a.id[:], b.id[:]); c != 0 {
		return c
	}
	return int(a.typ) - int(b.typ)
}

// runPad fills each block's tail after its last whole record.
var runPad [runBlockSize - runPerBlock*runRecSize]byte

// runWriter writes entries, in key order, as a run.
type runWriter struct {
	s   *spillRun
	w   *bufio.Writer
	n   int
	rec [runRecSize]byte
}

func newRunWriter(n int, seed maphash.Seed, dir string) (*runWriter, error) {
	f, err := os.CreateTemp(dir, "blockwise-index-*.run")
	if err != nil {
		return nil, fmt.Errorf("repo: index spill: %w", err)
	}
	os.Remove(f.Name()) // ours alone, and gone with the descriptor
	return &runWriter{s: &spillRun{f: f, bloom: newBloom(n, seed)}, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (w *runWriter) add(e *ientry) {
	if w.n%runPerBlock == 0 {
		if w.n > 0 {
			w.w.Write(runPad[:])
		}
		w.s.first = append(w.s.first, e.key())
	}
	w.s.bloom.add(e.typ, e.id)
	encodeRec(&w.rec, e)
	w.w.Write(w.rec[:])
	w.n++
}

func (w *runWriter) finish() (*spillRun, error) {
	w.s.n = w.n
	if err := w.w.Flush(); err != nil {
		w.s.f.Close()
		return nil, fmt.Errorf("repo: index spill: %w", err)
	}
	return w.s, nil
}

// mergeRuns merges runs, oldest first, into one; of equal keys the older
// run's entry comes first, as if never spilled.
func mergeRuns(runs []*spillRun, seed maphash.Seed, dir string) (*spillRun, error) {
	total := 0
	its := make([]*runIter, len(runs))
	for i, r := range runs {
		total += r.n
		its[i] = &runIter{r: r}
	}
	w, err := newRunWriter(total, seed, dir)
	if err != nil {
		return nil, err
	}
	for {
		best := -1
		for i, it := range its {
			ok, err := it.peek()
			if err != nil {
				w.s.f.Close()
				return nil, err
			}
			if ok && (best < 0 || it.cur.key().compare(its[best].cur.key()) < 0) {
				best = i
			}
		}
		if best < 0 {
			return w.finish()
		}
		w.add(&its[best].cur)
		its[best].have = false
	}
}

// runIter reads a run's entries in order.
type runIter struct {
	r    *spillRun
	recs []byte
	next int // entries read
	cur  ientry
	have bool
}

func (it *runIter) peek() (bool, error) {
	if it.have {
		return true, nil
	}
	if it.next >= it.r.n {
		return false, nil
	}
	if it.next%runPerBlock == 0 {
		n := min(runPerBlock, it.r.n-it.next) * runRecSize
		if cap(it.recs) < runBlockSize {
			it.recs = make([]byte, runBlockSize)
		}
		if _, err := it.r.f.ReadAt(it.recs[:n], int64(it.next/runPerBlock)*runBlockSize); err != nil {
			return false, fmt.Errorf("repo: index spill: %w", err)
		}
	}
	it.cur = decodeRec(it.recs[(it.next%runPerBlock)*runRecSize:])
	it.next++
	it.have = true
	return true, nil
}

func encodeRec(b *[runRecSize]byte, e *ientry) {
	copy(b[:32], e.id[:])
	binary.LittleEndian.PutUint32(b[32:], e.pack)
	binary.LittleEndian.PutUint32(b[36:], e.offset)
	binary.LittleEndian.PutUint32(b[40:], e.stored)
	binary.LittleEndian.PutUint32(b[44:], e.raw)
	b[48], b[49] = byte(e.typ), e.flags
}

func decodeRec(b []byte) ientry {
	var e ientry
	copy(e.id[:], b[:32])
	e.pack = binary.LittleEndian.Uint32(b[32:])
	e.offset = binary.LittleEndian.Uint32(b[36:])
	e.stored = binary.LittleEndian.Uint32(b[40:])
	e.raw = binary.LittleEndian.Uint32(b[44:])
	e.typ, e.flags = BlobType(b[48]), b[49]
	return e
}

// block reads block i into a pooled buffer; it returns the records.
func (s *spillRun) block(i int) ([]byte, *[]byte, error) {
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, runBlockSize)
		bp = &b
	}
	n := min(runPerBlock, s.n-i*runPerBlock) * runRecSize
	if _, err := s.f.ReadAt((*bp)[:n], int64(i)*runBlockSize); err != nil {
		s.bufs.Put(bp)
		return nil, nil, fmt.Errorf("repo: index spill: %w", err)
	}
	return (*bp)[:n], bp, nil
}

// find returns the run's first entry of the blob, if it has one.
func (s *spillRun) find(typ BlobType, id ID) (ientry, bool, error) {
	k := runKey{id, typ}
	if !s.bloom.has(typ, id) {
		return ientry{}, false, nil
	}
	// Block j is the first starting at or after k; an entry of k can sit
	// at the end of block j-1 (the first one, if j's starts with k too).
	j := sort.Search(len(s.first), func(i int) bool { return s.first[i].compare(k) >= 0 })
	for _, bi := range []int{j - 1, j} {
		if bi < 0 || bi >= len(s.first) {
			continue
		}
		e, ok, err := s.findIn(bi, k)
		if err != nil || ok {
			return e, ok, err
		}
	}
	return ientry{}, false, nil
}

// findIn looks for k's first entry in block bi.
func (s *spillRun) findIn(bi int, k runKey) (ientry, bool, error) {
	recs, bp, err := s.block(bi)
	if err != nil {
		return ientry{}, false, err
	}
	defer s.bufs.Put(bp)
	n := len(recs) / runRecSize
	j := sort.Search(n, func(j int) bool {
		r := recs[j*runRecSize:]
		return runKey{ID(r[:32]), BlobType(r[48])}.compare(k) >= 0
	})
	if j < n {
		if e := decodeRec(recs[j*runRecSize:]); e.key() == k {
			return e, true, nil
		}
	}
	return ientry{}, false, nil
}

// each calls fn for every entry, in key order.
func (s *spillRun) each(fn func(*ientry)) error {
	it := &runIter{r: s}
	for {
		ok, err := it.peek()
		if !ok || err != nil {
			return err
		}
		fn(&it.cur)
		it.have = false
	}
}

func (s *spillRun) close() { s.f.Close() }

// bloom is a blocked Bloom filter of blob keys: a key's 7 bits all lie
// in one 512-bit block (a cache line), so adding or testing a key costs
// one cache miss instead of 7 (building the filters of 10 M keys was a
// quarter of opening such a repository). 10 bits a key give ~1.1% false
// positives, each costing one block read of the run.
type bloom struct {
	bits []uint64
	seed maphash.Seed
}

const (
	bloomProbes     = 7
	bloomBlockWords = 8 // 512 bits
)

func newBloom(n int, seed maphash.Seed) bloom {
	blocks := (n*10+511)/512 + 1
	return bloom{bits: make([]uint64, blocks*bloomBlockWords), seed: seed}
}

// probes returns the key's block (its first word) and a hash whose 9-bit
// fields pick the bits in it.
func (b *bloom) probes(typ BlobType, id ID) (block int, h uint64) {
	h = maphash.Bytes(b.seed, id[:]) ^ uint64(typ)*0x9e3779b97f4a7c15
	hi, _ := bits.Mul64(h, uint64(len(b.bits)/bloomBlockWords))
	return int(hi) * bloomBlockWords, h * 0xbf58476d1ce4e5b9
}

func (b *bloom) add(typ BlobType, id ID) {
	block, h := b.probes(typ, id)
	w := b.bits[block : block+bloomBlockWords]
	for i := range bloomProbes {
		p := h >> (9 * i) & 511
		w[p/64] |= 1 << (p % 64)
	}
}

func (b *bloom) has(typ BlobType, id ID) bool {
	block, h := b.probes(typ, id)
	w := b.bits[block : block+bloomBlockWords]
	for i := range bloomProbes {
		p := h >> (9 * i) & 511
		if w[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

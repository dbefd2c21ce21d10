package repo

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/backend"
)

// blobKey identifies a blob: IDs are namespaced by type so a page and a
// chunk with equal bytes stay distinct.
type blobKey struct {
	Type BlobType
	ID   ID
}

// blobLoc says where a blob lives.
type blobLoc struct {
	packEntry
	Pack ID
}

// packInfo is one pack and its entries, the unit index files are made of.
type packInfo struct {
	ID      ID
	Entries []packEntry
}

// index maps blobs to packs. It is the union of all index files, built at
// Open and extended as writers commit.
//
// It is what a backup's memory grows with, so it is compact: every blob
// is one 52-byte ientry in a flat slice, found through an open-addressing
// table of 4-byte positions (~60 bytes a blob in all, against ~240 for a
// map of keys to locations plus a map of packs to entries). Past
// Options.IndexMemoryBlobs entries, the table's entries go to a sorted run file
// (spill.go) and it starts empty again.
type index struct {
	mu      sync.RWMutex
	ents    []ientry
	packs   []ID            // pack IDs by ientry.pack
	byPack  map[ID]uint32   // pack ID -> position in packs
	table   []uint32        // 0 = empty, else 1 + position in ents; len is a power of two
	used    int             // occupied slots of table
	seed    maphash.Seed    // per process: crafted IDs cannot pile into one probe chain
	files   map[string]bool // names of the index files it was built from
	runs    []*spillRun     // spilled entries, oldest first
	noSpill bool            // a spill failed: keep everything in memory
	max     int             // most entries in the table before a spill, 0 for no limit
	dir     string          // where runs go ("": os.TempDir())
	only    BlobType        // if not 0, the only type of blob kept (pageIndex)
}

// ientry is one blob of one pack.
type ientry struct {
	id                  ID
	pack                uint32 // position in index.packs
	offset, stored, raw uint32
	typ                 BlobType
	flags               uint8
}

// newIndex returns an empty index that spills past max entries (0: never)
// into run files in dir.
func newIndex(max int, dir string) *index {
	return &index{byPack: map[ID]uint32{}, files: map[string]bool{}, seed: maphash.MakeSeed(), max: max, dir: dir}
}

// newIndex returns an empty index with r's spill settings.
func (r *Repository) newIndex() *index {
	return newIndex(r.opts.IndexMemoryBlobs, r.opts.IndexSpillDir)
}

// pageIndex reads the index files named into an index of their pages
// alone, for Stats, Check and Prune: they look up only pages (a point's
// chunks are joined with the index by one sweep of its files,
// sweepIndex), and an index of every chunk spills to sorted runs past
// Options.IndexMemoryBlobs, which made them grow 12-16 times from 1 M to
// 10 M chunks (docs/performance.md, "Repositories of millions of
// chunks"). Pages are ~1/PageSlots of the blobs, so it never spills in
// practice.
func (r *Repository) pageIndex(ctx context.Context, files []backend.FileInfo) (*index, error) {
	x := r.newIndex()
	x.only = BlobPage
	if err := r.readIndexFiles(ctx, x, files); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

// sweepIndex calls fn for every entry of the index files named, one
// file at a time (loaded several at once, as Open loads them), a pack
// named by two files twice. It is a second decryption of the files
// instead of an index holding every blob.
func (r *Repository) sweepIndex(ctx context.Context, files []backend.FileInfo, fn func(e *packEntry)) error {
	var mu sync.Mutex
	return r.eachIndexFile(ctx, files, func(_ string, body []byte, _ int) {
		mu.Lock()
		defer mu.Unlock()
		walkIndex(body, func(ID, uint32) bool { return true }, func(e packEntry) { fn(&e) }) // validated
	})
}

// lookup returns where a blob is. A run that cannot be read counts as not
// having it: the caller then fails loudly (a restore) or stores the blob
// again (a backup), never uses a wrong location.
func (x *index) lookup(t BlobType, id ID) (blobLoc, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.find(t, id)
	if !ok {
		return blobLoc{}, false
	}
	return blobLoc{packEntry: e.entry(), Pack: x.packs[e.pack]}, true
}

func (x *index) has(t BlobType, id ID) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.find(t, id)
	return ok
}

func (e *ientry) entry() packEntry {
	return packEntry{Type: e.typ, Flags: e.flags, ID: e.id, Offset: e.offset, Stored: e.stored, Raw: e.raw}
}

// find looks in the runs, oldest first, then in the table: the first
// location added wins, spilled or not. x.mu held.
func (x *index) find(t BlobType, id ID) (ientry, bool) {
	for _, r := range x.runs {
		if e, ok, err := r.find(t, id); err == nil && ok {
			return e, true
		}
	}
	if i, ok := x.findMem(t, id); ok {
		return x.ents[i], true
	}
	return ientry{}, false
}

// findMem returns the position in ents of the blob's first entry.
func (x *index) findMem(t BlobType, id ID) (uint32, bool) {
	if len(x.table) == 0 {
		return 0, false
	}
	mask := uint64(len(x.table) - 1)
	for h := maphash.Bytes(x.seed, id[:]) & mask; ; h = (h + 1) & mask {
		v := x.table[h]
		if v == 0 {
			return 0, false
		}
		if e := &x.ents[v-1]; e.id == id && e.typ == t {
			return v - 1, true
		}
	}
}

// insert makes ents[i] findable unless its blob already is (a blob stored
// twice keeps its first location). x.mu held; the table has room.
func (x *index) insert(i uint32) {
	e := &x.ents[i]
	mask := uint64(len(x.table) - 1)
	for h := maphash.Bytes(x.seed, e.id[:]) & mask; ; h = (h + 1) & mask {
		v := x.table[h]
		if v == 0 {
			x.table[h] = i + 1
			x.used++
			return
		}
		if o := &x.ents[v-1]; o.id == e.id && o.typ == e.typ {
			return
		}
	}
}

// reserve makes room for n more blobs without rehashing on the way, up to
// the spill limit.
func (x *index) reserve(n int) {
	lim := x.limit()
	if lim > 0 {
		n = min(n, max(0, lim-len(x.ents)))
	}
	if cap(x.ents)-len(x.ents) < n {
		// At least double: Check adds its index a file (~32k blobs) at a
		// time, and slices.Grow by exactly n moved the whole slice at
		// every file, 40% of checking a 1 M-chunk repository.
		grow := max(n, len(x.ents))
		if lim > 0 {
			grow = max(n, min(grow, lim-len(x.ents)))
		}
		x.ents = slices.Grow(x.ents, grow)
	}
	want := x.used + n
	if want*4 <= len(x.table)*3 {
		return
	}
	size := 1024
	for want*4 > size*3 {
		size *= 2
	}
	x.table = make([]uint32, size)
	x.rehash()
}

func (x *index) rehash() {
	clear(x.table)
	x.used = 0
	for i := range x.ents {
		x.insert(uint32(i))
	}
}

// limit is the table's most entries, 0 for no limit.
func (x *index) limit() int {
	if x.noSpill || x.max <= 0 {
		return 0
	}
	return x.max
}

// spill moves the table's entries to a run. If that fails the entries
// stay, and so does everything after: slower to run out of memory than
// to lose track of a blob.
func (x *index) spill() {
	r, err := writeRun(x.ents, x.seed, x.dir) // sorts ents
	if err != nil {
		x.noSpill = true
		x.rehash()
		return
	}
	x.runs = append(x.runs, r)
	x.ents = x.ents[:0]
	clear(x.table)
	x.used = 0
	// Merge like a counter in base runFanIn: runs stay in decreasing
	// size, fewer than runFanIn of each size, each entry rewritten
	// log_runFanIn(spilled/limit) times. In base 2 a 10 M-chunk
	// repository rewrote every entry three times at each open, for fewer
	// runs than the Bloom filters make cheap to look through.
	for k := len(x.runs); k >= runFanIn && x.runs[k-runFanIn].n <= 2*x.runs[k-1].n; k = len(x.runs) {
		m, err := mergeRuns(x.runs[k-runFanIn:], x.seed, x.dir)
		if err != nil {
			return // keep them: merged at the next spill
		}
		for _, r := range x.runs[k-runFanIn:] {
			r.close()
		}
		x.runs = append(x.runs[:k-runFanIn], m)
	}
}

// runFanIn is how many runs of one size are merged into one.
const runFanIn = 16

// add merges packs; a pack already known is skipped (its ID is the hash
// of its header, so its entries are the same).
func (x *index) add(file string, packs []packInfo) {
	n := 0
	for _, p := range packs {
		n += len(p.Entries)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.begin(file, n)
	for i := range packs {
		x.addPack(&packs[i])
	}
}

// addFile merges a validated index file body (walkIndex) straight from
// its bytes, of about n entries.
func (x *index) addFile(file string, body []byte, n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.begin(file, n)
	var ord uint32
	walkIndex(body, func(id ID, _ uint32) bool { // validated by the caller
		var fresh bool
		ord, fresh = x.newPack(id)
		return fresh
	}, func(e packEntry) { x.addEntry(ord, &e) })
}

// begin records file and makes room for n entries (of all types: an
// index of one type grows as it goes). x.mu held.
func (x *index) begin(file string, n int) {
	if file != "" {
		x.files[file] = true
	}
	if x.only == 0 {
		x.reserve(n)
	}
}

// addPack merges one pack unless known. x.mu held.
func (x *index) addPack(p *packInfo) {
	ord, fresh := x.newPack(p.ID)
	if !fresh {
		return
	}
	for i := range p.Entries {
		x.addEntry(ord, &p.Entries[i])
	}
}

// newPack numbers a pack; fresh is false if it was known (its ID is the
// hash of its header, so its entries are the same). x.mu held.
func (x *index) newPack(id ID) (ord uint32, fresh bool) {
	if ord, ok := x.byPack[id]; ok {
		return ord, false
	}
	ord = uint32(len(x.packs))
	x.byPack[id] = ord
	x.packs = append(x.packs, id)
	return ord, true
}

// addEntry adds one entry of pack ord, spilling first if the table is
// full. x.mu held.
func (x *index) addEntry(ord uint32, e *packEntry) {
	if x.only != 0 && e.Type != x.only {
		return
	}
	if lim := x.limit(); lim > 0 && len(x.ents) >= lim {
		x.spill()
	}
	if (len(x.ents)+1)*4 > len(x.table)*3 {
		x.reserve(max(1024, len(x.ents)))
	}
	x.ents = append(x.ents, ientry{id: e.ID, pack: ord, offset: e.Offset, stored: e.Stored, raw: e.Raw, typ: e.Type, flags: e.Flags})
	x.insert(uint32(len(x.ents) - 1))
}

// replace swaps in o's contents, so holders of x see the new state.
func (x *index) replace(o *index) {
	o.mu.Lock()
	ents, packs, byPack, table, used, seed, files, runs, noSpill := o.ents, o.packs, o.byPack, o.table, o.used, o.seed, o.files, o.runs, o.noSpill
	o.runs = nil // x owns them now
	o.mu.Unlock()
	x.mu.Lock()
	old := x.runs
	x.ents, x.packs, x.byPack, x.table, x.used, x.seed, x.files, x.runs, x.noSpill = ents, packs, byPack, table, used, seed, files, runs, noSpill
	x.mu.Unlock()
	for _, r := range old {
		r.close()
	}
}

// count is how many entries x holds, in memory and spilled (a blob
// stored twice counts twice): what sizes a set of the blobs in use.
func (x *index) count() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := len(x.ents)
	for _, r := range x.runs {
		n += r.n
	}
	return n
}

// close releases the run files.
func (x *index) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range x.runs {
		r.close()
	}
	x.runs = nil
}

// snapshot returns a copy of the pack table (each pack's entries in
// offset order) and the index file names. It fails if a run cannot be
// read: a pack table with holes would make Prune delete live packs.
func (x *index) snapshot() (map[ID][]packEntry, []string, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	packs := make(map[ID][]packEntry, len(x.packs))
	for _, id := range x.packs {
		packs[id] = nil
	}
	err := x.eachLocked(func(e *ientry) {
		id := x.packs[e.pack]
		packs[id] = append(packs[id], e.entry())
	})
	if err != nil {
		return nil, nil, err
	}
	for _, es := range packs {
		slices.SortFunc(es, func(a, b packEntry) int { return cmp.Compare(a.Offset, b.Offset) })
	}
	return packs, x.fileNamesLocked(), nil
}

// each calls fn for every entry (a blob stored twice has two), those in
// memory and then each run's in key order: one sequential pass over the
// runs. Check and Stats join what the points reference with it instead
// of looking each chunk up: a lookup in a run is a block read, which
// made them grow quadratically with the repository
// (docs/performance.md, "Repositories of millions of chunks").
func (x *index) each(fn func(e *ientry)) error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.eachLocked(fn)
}

func (x *index) eachLocked(fn func(e *ientry)) error {
	for i := range x.ents {
		fn(&x.ents[i])
	}
	for _, r := range x.runs {
		if err := r.each(fn); err != nil {
			return err
		}
	}
	return nil
}

// fileNames returns the names of the index files x was built from.
func (x *index) fileNames() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.fileNamesLocked()
}

func (x *index) fileNamesLocked() []string {
	files := make([]string, 0, len(x.files))
	for f := range x.files {
		files = append(files, f)
	}
	return files
}

// Index file body (inside an envelope with magic "BWIX"):
//
//	packCount u32 | packCount × (packID [32] | n u32 | n × entry)
//	entry = type u8 | flags u8 | offset u32 | stored u32 | raw u32 | id [32]  (46 bytes)
const (
	indexMagic     = "BWIX"
	indexEntrySize = 46
)

func encodeIndex(packs []packInfo) []byte {
	b := putU32(nil, uint32(len(packs)))
	for _, p := range packs {
		b = append(b, p.ID[:]...)
		b = putU32(b, uint32(len(p.Entries)))
		for _, e := range p.Entries {
			b = append(b, byte(e.Type), e.Flags)
			b = putU32(b, e.Offset)
			b = putU32(b, e.Stored)
			b = putU32(b, e.Raw)
			b = append(b, e.ID[:]...)
		}
	}
	return b
}

func decodeIndex(b []byte) ([]packInfo, error) {
	var packs []packInfo
	err := walkIndex(b, func(id ID, n uint32) bool {
		packs = append(packs, packInfo{ID: id, Entries: make([]packEntry, 0, n)})
		return true
	}, func(e packEntry) {
		p := &packs[len(packs)-1]
		p.Entries = append(p.Entries, e)
	})
	return packs, err
}

// walkIndex validates an index file body, calling pack (if not nil) for
// each pack and, when that returns true, entry for each of its entries,
// in order, without building a list: opening a repository walks each
// file twice, once to validate it and once to merge it (index.addFile),
// instead of decoding it into a second copy ~1.05× its size
// (docs/performance.md, "Repositories of millions of chunks").
func walkIndex(b []byte, pack func(id ID, n uint32) bool, entry func(e packEntry)) error {
	r := &reader{b: b}
	n := r.u32()
	if uint64(n)*36 > uint64(len(r.b)) { // each pack needs at least 36 bytes
		return fmt.Errorf("index: %d packs in %d bytes: %w", n, len(r.b), ErrCorrupt)
	}
	for range n {
		id := r.id()
		m := r.u32()
		if uint64(m)*indexEntrySize > uint64(len(r.b)) {
			return fmt.Errorf("index: pack %v: %d entries overrun: %w", id.Short(), m, ErrCorrupt)
		}
		want := pack != nil && pack(id, m) && entry != nil
		for i := range m {
			e := packEntry{Type: BlobType(r.u8()), Flags: r.u8(), Offset: r.u32(), Stored: r.u32(), Raw: r.u32(), ID: r.id()}
			if !e.Type.valid() || !validFlags(e.Flags) || e.Stored == 0 {
				return fmt.Errorf("index: pack %v entry %d invalid: %w", id.Short(), i, ErrCorrupt)
			}
			if want {
				entry(e) // by value: a pointer would move every entry to the heap
			}
		}
	}
	return r.done()
}

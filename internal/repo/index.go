package repo

import (
	"fmt"
	"maps"
	"sync"
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
type index struct {
	mu    sync.RWMutex
	blobs map[blobKey]blobLoc
	packs map[ID][]packEntry
	files map[string]bool // names of the index files it was built from
}

func newIndex() *index {
	return &index{blobs: map[blobKey]blobLoc{}, packs: map[ID][]packEntry{}, files: map[string]bool{}}
}

func (x *index) lookup(t BlobType, id ID) (blobLoc, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l, ok := x.blobs[blobKey{t, id}]
	return l, ok
}

func (x *index) has(t BlobType, id ID) bool {
	_, ok := x.lookup(t, id)
	return ok
}

// add merges packs; a blob stored twice keeps its first location.
func (x *index) add(file string, packs []packInfo) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if file != "" {
		x.files[file] = true
	}
	for _, p := range packs {
		x.packs[p.ID] = p.Entries
		for _, e := range p.Entries {
			k := blobKey{e.Type, e.ID}
			if _, ok := x.blobs[k]; !ok {
				x.blobs[k] = blobLoc{e, p.ID}
			}
		}
	}
}

// replace swaps in o's contents, so holders of x see the new state.
func (x *index) replace(o *index) {
	o.mu.RLock()
	blobs, packs, files := o.blobs, o.packs, o.files
	o.mu.RUnlock()
	x.mu.Lock()
	x.blobs, x.packs, x.files = blobs, packs, files
	x.mu.Unlock()
}

// snapshot returns a copy of the pack table and index file names.
func (x *index) snapshot() (map[ID][]packEntry, []string) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return maps.Clone(x.packs), x.fileNamesLocked()
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
	r := &reader{b: b}
	n := r.u32()
	if uint64(n)*36 > uint64(len(r.b)) { // each pack needs at least 36 bytes
		return nil, fmt.Errorf("index: %d packs in %d bytes: %w", n, len(r.b), ErrCorrupt)
	}
	packs := make([]packInfo, 0, n)
	for range n {
		p := packInfo{ID: r.id()}
		m := r.u32()
		if uint64(m)*indexEntrySize > uint64(len(r.b)) {
			return nil, fmt.Errorf("index: pack %v: %d entries overrun: %w", p.ID.Short(), m, ErrCorrupt)
		}
		p.Entries = make([]packEntry, m)
		for i := range p.Entries {
			e := packEntry{Type: BlobType(r.u8()), Flags: r.u8(), Offset: r.u32(), Stored: r.u32(), Raw: r.u32(), ID: r.id()}
			if !e.Type.valid() || e.Flags&^flagZstd != 0 || e.Stored == 0 {
				return nil, fmt.Errorf("index: pack %v entry %d invalid: %w", p.ID.Short(), i, ErrCorrupt)
			}
			p.Entries[i] = e
		}
		packs = append(packs, p)
	}
	return packs, r.done()
}

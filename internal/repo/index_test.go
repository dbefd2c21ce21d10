package repo

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestIndexModel adds random packs, with blobs repeated across packs and
// packs added twice, and compares every lookup and the pack table with a
// plain map that keeps each blob's first location.
func TestIndexModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := newIndex()
	model := map[blobKey]blobLoc{}
	packs := map[ID][]packEntry{}
	var ids []ID // a pool, so blobs recur
	var added []packInfo
	for round := range 200 {
		var batch []packInfo
		for range 1 + rng.IntN(3) {
			p := packInfo{ID: randomID(rng)}
			if len(added) > 0 && rng.IntN(10) == 0 {
				p = added[rng.IntN(len(added))] // the same pack again, from another index file
			} else {
				for range rng.IntN(40) {
					var id ID
					if len(ids) > 0 && rng.IntN(4) == 0 {
						id = ids[rng.IntN(len(ids))]
					} else {
						id = randomID(rng)
						ids = append(ids, id)
					}
					e := packEntry{Type: BlobType(1 + rng.IntN(2)), Flags: uint8(rng.IntN(2)), ID: id,
						Offset: rng.Uint32(), Stored: 1 + rng.Uint32N(1<<20), Raw: rng.Uint32()}
					p.Entries = append(p.Entries, e)
				}
			}
			batch = append(batch, p)
		}
		for _, p := range batch {
			if _, ok := packs[p.ID]; ok {
				continue
			}
			packs[p.ID] = p.Entries
			added = append(added, p)
			for _, e := range p.Entries {
				if _, ok := model[blobKey{e.Type, e.ID}]; !ok {
					model[blobKey{e.Type, e.ID}] = blobLoc{e, p.ID}
				}
			}
		}
		x.add("", batch)
		if round%20 != 19 {
			continue
		}
		for k, want := range model {
			got, ok := x.lookup(k.Type, k.ID)
			if !ok || got != want {
				t.Fatalf("lookup %v: got %+v %v, want %+v", k, got, ok, want)
			}
		}
		for range 100 { // absent: unknown IDs, and known IDs under the other type
			id := randomID(rng)
			if x.has(BlobChunk, id) || x.has(BlobPage, id) {
				t.Fatalf("unknown blob %v found", id.Short())
			}
			id = ids[rng.IntN(len(ids))]
			for _, typ := range []BlobType{BlobChunk, BlobPage} {
				_, want := model[blobKey{typ, id}]
				if x.has(typ, id) != want {
					t.Fatalf("has(%v, %v) = %v, want %v", typ, id.Short(), !want, want)
				}
			}
		}
		got, _ := x.snapshot()
		if len(got) != len(packs) {
			t.Fatalf("snapshot has %d packs, want %d", len(got), len(packs))
		}
		for id, es := range packs {
			if g := got[id]; len(g) != len(es) || (len(es) > 0 && g[0] != es[0]) {
				t.Fatalf("pack %v: snapshot entries differ", id.Short())
			}
		}
	}
}

func randomID(rng *rand.Rand) ID {
	var id ID
	for i := 0; i < len(id); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			id[i+j] = byte(v >> (8 * j))
		}
	}
	return id
}

// TestIndexBytesPerBlob pins the index's memory per blob, what a large
// repository's backup grows with: it was ~240 bytes with maps.
func TestIndexBytesPerBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~60 MiB")
	}
	const blobs = 1 << 20
	rng := rand.New(rand.NewPCG(3, 4))
	packs := make([]packInfo, blobs/256)
	for i := range packs {
		packs[i].ID = randomID(rng)
		packs[i].Entries = make([]packEntry, 256)
		for j := range packs[i].Entries {
			packs[i].Entries[j] = packEntry{Type: BlobChunk, ID: randomID(rng), Stored: 1}
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := newIndex()
	x.add("f", packs) // sized once, as readIndex does
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / blobs
	t.Logf("%.1f bytes per blob", per)
	if per > 64 {
		t.Errorf("index takes %.1f bytes per blob, want <= 64", per)
	}
	runtime.KeepAlive(x)
	runtime.KeepAlive(packs)
}

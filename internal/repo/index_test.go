package repo

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// TestIndexModel adds random packs, with blobs repeated across packs and
// packs added twice, and compares every lookup and the pack table with a
// plain map that keeps each blob's first location.
func TestIndexModel(t *testing.T) {
	for _, limit := range []int{0, 37} {
		t.Run(fmt.Sprint("memory", limit), func(t *testing.T) {
			indexModel(t, limit)
		})
	}
}

// indexModel runs the model with at most limit blobs in memory (0: no
// limit).
func indexModel(t *testing.T, limit int) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := newIndex(limit, "")
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
		if limit > 0 && (len(x.runs) == 0 || len(x.ents) > limit) {
			t.Fatalf("%d runs, %d entries in memory: the limit %d is not kept", len(x.runs), len(x.ents), limit)
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
		got, _, err := x.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(packs) {
			t.Fatalf("snapshot has %d packs, want %d", len(got), len(packs))
		}
		for id, es := range packs {
			want := slices.SortedFunc(slices.Values(es), func(a, b packEntry) int { return cmp.Compare(a.Offset, b.Offset) })
			if !slices.Equal(got[id], want) {
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
	x := newIndex(0, "") // the table alone
	x.add("f", packs)    // sized once, as readIndex does
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

// TestIndexSpilledBytesPerBlob: past Options.IndexMemoryBlobs, what stays in
// memory per blob is a Bloom filter and a key per block of the runs, and
// every blob is still found.
func TestIndexSpilledBytesPerBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~50 MiB of runs")
	}
	const blobs = 1 << 20
	rng := rand.New(rand.NewPCG(5, 6))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := newIndex(16<<10, "")
	defer x.close()
	var sample []ID
	for range blobs / 256 { // a pack at a time, as index files come
		p := packInfo{ID: randomID(rng), Entries: make([]packEntry, 256)}
		for j := range p.Entries {
			p.Entries[j] = packEntry{Type: BlobChunk, ID: randomID(rng), Stored: 1, Offset: uint32(j)}
		}
		sample = append(sample, p.Entries[rng.IntN(256)].ID)
		x.add("", []packInfo{p})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc-uint64(len(sample)*32)) / blobs
	t.Logf("%.1f bytes per blob, %d runs", per, len(x.runs))
	if per > 8 {
		t.Errorf("spilled index takes %.1f bytes per blob, want <= 8", per)
	}
	// 63 spills (the 64th table stays in memory), merged 16 at a time.
	if spills := blobs/(16<<10) - 1; len(x.runs) != spills/runFanIn+spills%runFanIn {
		t.Errorf("%d runs, want %d", len(x.runs), spills/runFanIn+spills%runFanIn)
	}
	for _, id := range sample {
		if !x.has(BlobChunk, id) {
			t.Fatalf("blob %v lost in the runs", id.Short())
		}
	}
}

// sampleEntropy's table gives the textbook −Σ f·log2(f).
func TestSampleEntropy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, spread := range []int{1, 2, 16, 64, 256} {
		var hist [256]int
		n := 0
		for range 1 + rng.IntN(entropySamples) {
			hist[rng.IntN(spread)]++
			n++
		}
		want := 0.0
		for _, c := range hist {
			if c > 0 {
				f := float64(c) / float64(n)
				want -= f * math.Log2(f)
			}
		}
		if got := sampleEntropy(&hist, n); math.Abs(got-want) > 1e-9 {
			t.Errorf("spread %d: entropy %v, want %v", spread, got, want)
		}
	}
}

// TestBloomFalsePositives: the blocked filter holds every key added and,
// at 10 bits a key, says yes to under 2% of the others.
func TestBloomFalsePositives(t *testing.T) {
	const n = 100000
	rng := rand.New(rand.NewPCG(9, 10))
	b := newBloom(n, maphash.MakeSeed())
	ids := make([]ID, n)
	for i := range ids {
		ids[i] = randomID(rng)
		b.add(BlobChunk, ids[i])
	}
	for _, id := range ids {
		if !b.has(BlobChunk, id) {
			t.Fatalf("%v added, not held", id.Short())
		}
	}
	fp := 0
	for range n {
		if b.has(BlobChunk, randomID(rng)) {
			fp++
		}
	}
	t.Logf("%.2f%% false positives", 100*float64(fp)/n)
	if fp > n/50 {
		t.Errorf("%d false positives in %d, want < 2%%", fp, n)
	}
}

package repo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestStats checks the totals against the images themselves, with a
// duplicated chunk, zero chunks, a short last chunk and an incremental
// sharing most pages with its parent, and that each distinct page is
// loaded once.
func TestStats(t *testing.T) {
	ctx := context.Background()
	be, loads := countLoads(mem.New(), backend.Data)
	r := initRepo(t, be, testOptions())
	cs := int(r.cfg.ChunkSize)
	rng := rand.New(rand.NewPCG(5, 6))
	img := repotest.Image(rng, 2*256*cs+3*cs+12<<10, cs, 0.3) // 3 pages, the last short
	copy(img[5*cs:6*cs], img[0:cs])                           // a duplicate (or a second zero) chunk
	m1 := backup(t, r, nil, img, nil)
	img2 := bytes.Clone(img)
	repotest.Fill(rng, img2[7*cs:8*cs]) // page 0 changes; pages 1 and 2 are shared
	m2 := backup(t, r, m1, img2, []uint64{7})

	var want RepoStats
	unique := map[string]bool{}
	for _, im := range [][]byte{img, img2} {
		want.Points++
		for off := 0; off < len(im); off += cs {
			c := im[off:min(off+cs, len(im))]
			if bytes.Count(c, []byte{0}) == len(c) {
				continue
			}
			want.LogicalBytes += int64(len(c))
			if !unique[string(c)] {
				unique[string(c)] = true
				want.UniqueBytes += int64(len(c))
			}
		}
	}
	loads.Store(0)
	got, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Points != want.Points || got.LogicalBytes != want.LogicalBytes || got.UniqueBytes != want.UniqueBytes || got.StoredBytes == 0 {
		t.Fatalf("stats %+v, want %+v (and stored bytes)", *got, want)
	}
	pages := map[ID]bool{} // distinct pages holding a chunk
	for _, m := range []*Manifest{m1, m2} {
		for _, p := range m.Pages {
			if !p.IsZero() {
				pages[p] = true
			}
		}
	}
	if n := loads.Load(); n != int64(len(pages)) {
		t.Fatalf("stats loaded %d pages, there are %d distinct ones", n, len(pages))
	}
}

// TestBlobSet: what was added is always there (prune's safety rests on
// it), type is part of the key, and random absent blobs are absent.
func TestBlobSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	s := newBlobSet(0)
	var added []ID
	for range 10000 {
		var id ID
		repotest.Fill(rng, id[:])
		s.add(BlobChunk, id)
		added = append(added, id)
	}
	for _, id := range added {
		if !s.has(BlobChunk, id) {
			t.Fatalf("chunk %v added but not held", id.Short())
		}
		if s.has(BlobPage, id) {
			t.Fatalf("page %v held: only the chunk of that ID was added", id.Short())
		}
	}
	for range 10000 {
		var id ID
		repotest.Fill(rng, id[:])
		if s.has(BlobChunk, id) {
			t.Fatalf("chunk %v never added but held", id.Short())
		}
	}
}

// TestBlobCounts: a counting set sums what is added per blob, past what
// 16 bits hold too, across growth, and hands each count out once.
func TestBlobCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	s := newBlobCounts(0)
	ids := make([]ID, 5000)
	for i := range ids {
		repotest.Fill(rng, ids[i][:])
		s.addN(BlobChunk, ids[i], uint32(i))
		s.addN(BlobChunk, ids[i], 1) // grows the set on the way
	}
	s.addN(BlobChunk, ids[7], ^uint32(0))
	s.addN(BlobChunk, ids[8], 40000) // twice: past 16 bits on the second
	s.addN(BlobChunk, ids[8], 40000)
	for i, id := range ids {
		want := uint64(i) + 1
		switch i {
		case 7:
			want += uint64(^uint32(0))
		case 8:
			want += 80000
		}
		if n, ok := s.indexedFirst(BlobChunk, id); !ok || n != want {
			t.Fatalf("blob %d: count %d %v, want %d", i, n, ok, want)
		}
		if _, ok := s.indexedFirst(BlobChunk, id); ok {
			t.Fatalf("blob %d counted twice", i)
		}
	}
	if _, ok := s.indexedFirst(BlobPage, ids[0]); ok {
		t.Fatal("a page found among chunks")
	}
}

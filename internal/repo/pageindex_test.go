package repo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// pageIndexFixture is a repository of two points (the second an
// incremental sharing pages) with 256-slot pages, so it has far more
// chunks than pages.
func pageIndexFixture(t *testing.T) (*Repository, []byte) {
	r := initRepo(t, mem.New(), testOptions())
	cs := int(r.cfg.ChunkSize)
	rng := rand.New(rand.NewPCG(11, 12))
	img := repotest.Image(rng, 3*256*cs, cs, 0.2)
	m1 := backup(t, r, nil, img, nil)
	img2 := bytes.Clone(img)
	repotest.Fill(rng, img2[3*cs:4*cs])
	backup(t, r, m1, img2, []uint64{3})
	return r, img
}

// TestPageIndexHoldsPagesAlone: the index Stats, Check and Prune build
// holds every page blob and no chunk (a chunk in it would be the cost
// the page index exists to avoid: an index of every chunk, spilled past
// Options.IndexMemoryBlobs).
func TestPageIndexHoldsPagesAlone(t *testing.T) {
	r, _ := pageIndexFixture(t)
	ctx := context.Background()
	files, _, err := r.indexFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x, err := r.pageIndex(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	pages, chunks := map[ID]bool{}, 0
	r.idx.each(func(e *ientry) {
		if e.typ == BlobPage {
			pages[e.id] = true
		} else {
			chunks++
		}
	})
	if x.count() != len(pages) || chunks <= len(pages) {
		t.Fatalf("page index holds %d blobs; the repository has %d pages and %d chunks", x.count(), len(pages), chunks)
	}
	for id := range pages {
		if !x.has(BlobPage, id) {
			t.Fatalf("page %v missing from the page index", id.Short())
		}
	}
}

// TestStatsWithoutOpenIndex: Stats gives the same totals whatever the
// repository's own index holds: none (OpenNoIndex, as `blockwise stats`
// opens it) or one spilled to runs every 3 blobs.
func TestStatsWithoutOpenIndex(t *testing.T) {
	r, _ := pageIndexFixture(t)
	ctx := context.Background()
	want, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bare, err := OpenNoIndex(ctx, r.Backend(), Secret{Password: testPassword}, Options{IndexMemoryBlobs: 3, IndexSpillDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	spilled := reopen(t, r, Options{IndexMemoryBlobs: 3, IndexSpillDir: t.TempDir()})
	for name, o := range map[string]*Repository{"no index": bare, "spilled index": spilled} {
		got, err := o.Stats(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *got != *want {
			t.Fatalf("%s: stats %+v, want %+v", name, *got, *want)
		}
	}
}

// TestPruneWithoutOpenIndex: Prune of a repository opened without its
// index (as `blockwise prune` opens it) removes what a forgotten point
// alone held and keeps the rest whole; the index it leaves holds none
// of the rewritten files' removed packs.
func TestPruneWithoutOpenIndex(t *testing.T) {
	r, _ := pageIndexFixture(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(13, 14))
	cs := int(r.cfg.ChunkSize)
	other := repotest.Image(rng, 256*cs, cs, 0)
	gone := backup(t, r, nil, other, nil)
	keep, err := r.ListManifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Forget(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	bare, err := OpenNoIndex(ctx, r.Backend(), Secret{Password: testPassword}, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	st, err := bare.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRemoved == 0 || !st.IndexRewritten {
		t.Fatalf("prune: %+v, want the forgotten point's packs removed", st)
	}
	if n := bare.idx.count(); n != 0 {
		t.Fatalf("index of a repository opened without one holds %d blobs after prune", n)
	}
	r2 := reopen(t, r, Options{})
	for _, m := range keep {
		if m.ID == gone.ID {
			continue
		}
		if _, err := r2.OpenImage(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
	}
	repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
}

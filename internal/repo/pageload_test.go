package repo

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
	"golang.org/x/sync/errgroup"
)

// TestParentLostPageCache: an incremental that walks its parent with
// ParentLost (pages loaded a pack at a time and kept) and then changes
// slots across many pages commits the same image as the model, on a disk
// of the same size and on one grown past a page boundary (the kept pages
// then decode into longer pages, slots past the parent's end zero).
func TestParentLostPageCache(t *testing.T) {
	for _, grow := range []int{0, 3<<20 + 12345} {
		r := initRepo(t, mem.New(), testOptions())
		ctx := context.Background()
		cs := int(r.cfg.ChunkSize)
		rng := rand.New(rand.NewPCG(uint64(grow), 3))
		img := repotest.Image(rng, 48<<20, cs, 0.5) // 3 pages of 256 slots
		full := backup(t, r, nil, img, nil)
		img = append(img, make([]byte, grow)...)
		changed := repotest.Mutate(rng, img, cs, 0.05)
		w, err := r.NewWriter(ctx, full, Meta{Disk: "disk0", DiskUUID: "uuid-1", Size: uint64(len(img))})
		if err != nil {
			t.Fatal(err)
		}
		if lost, err := w.ParentLost(ctx); err != nil || len(lost) != 0 {
			t.Fatalf("ParentLost: %v, %v", lost, err)
		}
		if len(w.pageCache) == 0 {
			t.Fatal("ParentLost kept no page for the writer")
		}
		var g errgroup.Group
		g.SetLimit(4)
		for _, b := range changed {
			g.Go(func() error {
				return w.PutChunk(ctx, uint64(b), img[b*cs:min((b+1)*cs, len(img))])
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		m, err := w.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		repotest.Verify(t, r.OpenImage, m.ID, img)
		repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	}
}

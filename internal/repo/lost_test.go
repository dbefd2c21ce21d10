package repo

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// lostFixture: one restore point, then packs deleted and the index
// repaired, so the point names blobs no index file holds.
func lostFixture(t *testing.T, lose func(packs []string) []string) (*Repository, *Manifest, []byte, *mem.Backend) {
	t.Helper()
	be := mem.New()
	r := initRepo(t, be, smallPacks())
	img := repotest.Image(rand.New(rand.NewPCG(5, 5)), 40<<16, 64<<10, 0.1)
	m := backup(t, r, nil, img, nil)
	var packs []string
	be.List(context.Background(), backend.Data, func(fi backend.FileInfo) error {
		packs = append(packs, fi.Name)
		return nil
	})
	slices.Sort(packs)
	for _, p := range lose(packs) {
		if err := be.Remove(context.Background(), backend.Handle{Type: backend.Data, Name: p}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.RepairIndex(context.Background(), RepairIndexOptions{})
	if err != nil || rep.Missing == 0 {
		t.Fatalf("repair index: %+v, %v", rep, err)
	}
	r2, err := Open(context.Background(), be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	return r2, m, img, be
}

// A writer never commits a point naming a blob no index file holds: an
// incremental whose caller does not put the lost slots again fails with
// ErrIncomplete, with or without ParentLost; one that puts the slots
// ParentLost names commits a point that restores whole, and check is
// clean once the damaged parent is forgotten.
func TestWriterRefusesLostBlobs(t *testing.T) {
	tests := []struct {
		name string
		lose func([]string) []string
	}{
		{"one pack", func(p []string) []string { return p[len(p)/2 : len(p)/2+1] }},
		{"every pack, pages too", func(p []string) []string { return p }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r, parent, img, _ := lostFixture(t, tt.lose)
			// No slot put again: refused, whether the caller asked or not.
			for _, ask := range []bool{false, true} {
				w, err := r.NewWriter(ctx, parent, parent.Meta)
				if err != nil {
					t.Fatal(err)
				}
				if ask {
					if lost, err := w.ParentLost(ctx); err != nil || len(lost) == 0 {
						t.Fatalf("ParentLost: %v, %v", lost, err)
					}
				}
				if m, err := w.Commit(ctx); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("commit over lost blobs (ParentLost called: %v): %v, %v", ask, m, err)
				}
			}
			w, err := r.NewWriter(ctx, parent, parent.Meta)
			if err != nil {
				t.Fatal(err)
			}
			lost, err := w.ParentLost(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cs := uint64(r.cfg.ChunkSize)
			for _, run := range lost {
				for s := run.First; s < run.First+run.N; s++ {
					if err := w.PutChunk(ctx, s, img[s*cs:min((s+1)*cs, uint64(len(img)))]); err != nil {
						t.Fatal(err)
					}
				}
			}
			m, err := w.Commit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			repotest.Verify(t, r.OpenImage, m.ID, img)
			if err := r.Forget(ctx, parent.ID); err != nil {
				t.Fatal(err)
			}
			repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
		})
	}
}

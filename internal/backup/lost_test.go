package backup

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/repo"
)

// TestBackupAfterLostPack (issue 15, item 2): a pack of the last point is
// deleted and the index repaired; the next backup re-reads what the
// repository lost, says how much, and its point restores whole. Losing
// every pack (the parent's pages too) is the extreme case.
func TestBackupAfterLostPack(t *testing.T) {
	tests := []struct {
		name string
		lose func([]string) []string
	}{
		{"one pack", func(p []string) []string { return p[len(p)/2 : len(p)/2+1] }},
		{"every pack", func(p []string) []string { return p }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, func(o *repo.Options) { o.PackSize = 256 << 10 })
			d, img := randomDisk(t, f, 8<<20)
			first := f.backup(t, "vm")
			packs := listNames(t, f.be, backend.Data)
			slices.Sort(packs)
			for _, p := range tt.lose(packs) {
				if err := f.be.Remove(ctx, backend.Handle{Type: backend.Data, Name: p}); err != nil {
					t.Fatal(err)
				}
			}
			if rep, err := f.repo.RepairIndex(ctx, repo.RepairIndexOptions{}); err != nil || rep.Missing == 0 {
				t.Fatalf("repair index: %+v, %v", rep, err)
			}
			r, err := repo.Open(ctx, f.be, "secret", repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			f.repo = r
			p := bytes.Repeat([]byte{9}, 64<<10) // one block changed
			d.WriteAt(p, 3<<20)
			copy(img[3<<20:], p)
			res := f.backup(t, "vm")
			if res.Mode != "incremental" || res.Parent.ID != first.Manifest.ID || res.LostBytes == 0 || res.ReadBytes < res.LostBytes {
				t.Fatalf("backup after a lost pack: mode %s, lost %d, read %d", res.Mode, res.LostBytes, res.ReadBytes)
			}
			if got := f.restoreInto(t, res.Manifest.ID, "r", 8<<20); !bytes.Equal(got, img) {
				t.Fatal("the point made after the lost pack differs from the disk")
			}
			// The damaged parent is the only thing check finds; forgotten,
			// the repository is clean (checkAfterTest) and the next
			// backup reads only what changed.
			if err := r.Forget(ctx, first.Manifest.ID); err != nil {
				t.Fatal(err)
			}
			if next := f.backup(t, "vm"); next.LostBytes != 0 || next.ReadBytes != 0 {
				t.Fatalf("backup after the healing one: lost %d, read %d", next.LostBytes, next.ReadBytes)
			}
		})
	}
}

// A writer whose caller skips the lost slots refuses to commit: the
// backup must never end with a point naming blobs no index holds.
func TestLostSlotsNotReadFailCommit(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, func(o *repo.Options) { o.PackSize = 256 << 10 })
	randomDisk(t, f, 4<<20)
	first := f.backup(t, "vm")
	packs := listNames(t, f.be, backend.Data)
	f.be.Remove(ctx, backend.Handle{Type: backend.Data, Name: packs[0]})
	if _, err := f.repo.RepairIndex(ctx, repo.RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := f.repo.NewWriter(ctx, first.Manifest, first.Manifest.Meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx); !errors.Is(err, repo.ErrIncomplete) {
		t.Fatalf("commit with lost slots not read again: %v", err)
	}
	if err := f.repo.Forget(ctx, first.Manifest.ID); err != nil {
		t.Fatal(err)
	}
}

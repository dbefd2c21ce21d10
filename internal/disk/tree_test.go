package disk

import (
	"bytes"
	"context"
	"testing"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// TestTreeFromDeletedSnapshot: a backup cycle deletes the previous
// snapshot before taking the next, so without T6 every snapshot's tree
// was built from all allocated data (T3). With the deleted snapshot's
// tree kept, the next tree rehashes only what CBT marked since it, and
// its root still equals a full build; a kept tree never serves a
// snapshot older than it, nor survives a newer published tree.
func TestTreeFromDeletedSnapshot(t *testing.T) {
	ctx := context.Background()
	_, d := newDisk(t, 16<<20, Options{})
	const bs = 64 << 10
	if _, err := d.WriteAt(randBuf(8<<20, 1), 0); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name       string
		write      int64 // offset of a 64 KiB write before the snapshot, -1 none
		deletePrev bool
		wantHashed int64 // blocks hashed for this snapshot's tree
	}{
		{"s0", -1, false, 128},    // T3: the allocated 8 MiB
		{"s1", 3 * bs, true, 1},   // T6: s0 deleted, its tree kept
		{"s2", 200 * bs, true, 1}, // T6 again, from s1's
		{"s3", 5 * bs, false, 1},  // T2: s2 is still there
		{"s4", 6 * bs, true, 1},   // s3 deleted: kept (newer than s2)
	}
	for i, s := range steps {
		if s.write >= 0 {
			if _, err := d.WriteAt(randBuf(bs, uint64(i)+7), s.write); err != nil {
				t.Fatal(err)
			}
		}
		if s.deletePrev {
			task, err := d.DeleteSnapshot(steps[i-1].name)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		before := d.trees.hashed.Load()
		if _, err := d.CreateSnapshot(s.name, ""); err != nil {
			t.Fatal(err)
		}
		checkTreeRoot(t, d, s.name)
		if got := d.trees.hashed.Load() - before; got != s.wantHashed {
			t.Errorf("%s: hashed %d blocks, want %d", s.name, got, s.wantHashed)
		}
	}
}

// checkTreeRoot waits for snapshot id's tree and compares its root with
// a full build over the snapshot's image.
func checkTreeRoot(t *testing.T, d *Disk, id string) {
	t.Helper()
	ctx := context.Background()
	_, root, err := d.SnapshotTree(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.OpenSnapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	img := make([]byte, s.Info().Size)
	if _, err := s.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	want, err := hashtree.Build(ctx, bytes.NewReader(img), int64(len(img)), d.trees.gran, 1)
	if err != nil {
		t.Fatal(err)
	}
	if root != want.Root() {
		t.Fatalf("%s: root %x, a full build %x", id, root, want.Root())
	}
}

package disk

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestNoSpaceDeleteSnapshotWhenFull: on a datastore filled to the last block,
// deleting a snapshot (the way to free space) still works: its
// checkpoints take the journal's reserve for their few files, and once
// the delta is gone the write that failed succeeds. A snapshot creation
// on the full datastore is still refused (it would only use more).
func TestNoSpaceDeleteSnapshotWhenFull(t *testing.T) {
	dir, _ := smallTmpfs(t, "16m")
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ds.Create("a", 4<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.WriteAt(pattern(1, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateSnapshot("s1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt(pattern(2, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	b, err := ds.Create("b", 64<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const chunk = 1 << 20
	n := 0
	for ; n < 64; n++ {
		if _, err = b.WriteAt(pattern(n, chunk), int64(n)*chunk); err != nil {
			break
		}
	}
	wantNoSpace(t, b, "write", err)
	_, err = b.CreateSnapshot("sb", "")
	wantNoSpace(t, b, "snapshot", err)
	task, err := a.DeleteSnapshot("s1")
	if err != nil {
		t.Fatalf("snapshot deletion on a full datastore: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("consolidation on a full datastore: %v", err)
	}
	if _, err := b.WriteAt(pattern(n, chunk), int64(n)*chunk); err != nil {
		t.Fatalf("the failed write after the consolidation freed space: %v", err)
	}
	got := make([]byte, 4<<20)
	if _, err := a.ReadAt(got, 0); err != nil || !bytes.Equal(got, pattern(2, 4<<20)) {
		t.Fatalf("disk a after its consolidation: %v", err)
	}
	for _, d := range []*Disk{a, b} {
		if err := d.Check(); err != nil {
			t.Fatal(err)
		}
	}
}

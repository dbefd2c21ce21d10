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

// TestCompareAndWriteNoSpace: on a full datastore a compare-and-write
// over allocated bytes works, and one over a hole (its store through the
// mapping faults, its write finds no space) fails with ErrNoSpace and
// leaves the bytes as they were; the disk has not failed.
func TestCompareAndWriteNoSpace(t *testing.T) {
	dir, _ := smallTmpfs(t, "8m")
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Disk e: one allocated page, then holes. Allocated before the fill.
	e, err := ds.Create("e", 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.WriteAt(bytes.Repeat([]byte{0xee}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("d", 32<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const chunk = 1 << 20
	n := 0
	for ; n < 32; n++ {
		if _, err = d.WriteAt(pattern(n, chunk), int64(n)*chunk); err != nil {
			break
		}
	}
	wantNoSpace(t, d, "write", err)
	sector := func(b byte) []byte { return bytes.Repeat([]byte{b}, Sector) }
	if err := d.CompareAndWrite(0, pattern(0, Sector), sector(0xca)); err != nil {
		t.Fatalf("CAW over allocated bytes on a full datastore: %v", err)
	}
	hole := int64(31 * chunk)
	err = d.CompareAndWrite(hole, make([]byte, Sector), sector(0xcb))
	wantNoSpace(t, d, "CAW over a hole", err)
	got := make([]byte, Sector)
	if _, err := d.ReadAt(got, hole); err != nil || !bytes.Equal(got, make([]byte, Sector)) {
		t.Fatalf("a failed CAW changed the bytes: %v % x", err, got[:8])
	}
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, sector(0xca)) {
		t.Fatalf("the CAW over allocated bytes: %v % x", err, got[:8])
	}
	// Straddling an allocated page and a hole: the first part may be
	// stored before the second faults; it is put back.
	exp := append(sector(0xee), make([]byte, Sector)...)
	err = e.CompareAndWrite(12288-Sector, exp, bytes.Repeat([]byte{0xcc}, 2*Sector))
	wantNoSpace(t, e, "CAW over a page and a hole", err)
	two := make([]byte, 2*Sector)
	if _, err := e.ReadAt(two, 12288-Sector); err != nil || !bytes.Equal(two, exp) {
		t.Fatalf("a failed CAW across a hole changed the bytes: %v % x", err, two[Sector-4:Sector+4])
	}
}

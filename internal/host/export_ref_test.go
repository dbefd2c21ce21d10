package host

import (
	"context"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
)

// TestExportsHoldDisk: a disk with an open export is not deleted, and the
// export's I/O is counted per disk.
func TestExportsHoldDisk(t *testing.T) {
	ds, err := disk.OpenDatastore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := New(ds)
	defer h.Close()
	d, err := h.Create("vm1", 1<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	live, err := h.Open(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := h.Open(ctx, "vm1@s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := live.WriteAt(ctx, make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := snap.ReadAt(ctx, make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
	if err := live.WriteAt(ctx, make([]byte, 512), 1<<20, false); err == nil {
		t.Fatal("write past the end accepted")
	}
	st := h.OpenDisks()
	want := IOStats{ReadOps: 1, ReadBytes: 512, WriteOps: 1, WriteBytes: 4096}
	if len(st) != 1 || st[0].IO != want || st[0].OpenExports != 2 {
		t.Fatalf("stats %+v", st)
	}
	if err := h.Delete("vm1"); !errors.Is(err, disk.ErrBusy) {
		t.Fatalf("delete with exports: %v", err)
	}
	live.Close()
	snap.Close()
	if n := h.OpenExports("vm1"); n != 0 {
		t.Fatalf("%d exports after close", n)
	}
	if err := h.Delete("vm1"); err != nil {
		t.Fatal(err)
	}
}

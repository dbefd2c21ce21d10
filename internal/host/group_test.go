package host_test

import (
	"context"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

func newHost(t *testing.T) *host.Host {
	t.Helper()
	ds, err := disk.OpenDatastore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := host.New(ds)
	t.Cleanup(func() { h.Close() })
	return h
}

// TestSnapshotGroup: every disk gets the snapshot; a failure on one
// leaves none; a name twice is refused.
func TestSnapshotGroup(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := h.Create(n, 1<<20, disk.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := h.SnapshotGroup(ctx, []string{"b", "a"}, "s1", "group")
	if err != nil || len(infos) != 2 || infos[0].ID != "s1" || infos[0].ChangeID == "" {
		t.Fatalf("group snapshot: %+v %v", infos, err)
	}
	if _, err := h.SnapshotGroup(ctx, []string{"a", "a"}, "s2", ""); !errors.Is(err, disk.ErrInvalidName) {
		t.Fatalf("a disk twice: %v", err)
	}
	b, _ := h.Disk("b")
	if _, err := b.CreateSnapshot("s3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.SnapshotGroup(ctx, []string{"a", "b"}, "s3", ""); !errors.Is(err, disk.ErrExists) {
		t.Fatalf("b has s3 already: %v", err)
	}
	a, _ := h.Disk("a")
	for _, s := range a.Snapshots() {
		if s.ID == "s3" {
			t.Fatal("a failed group snapshot left a snapshot on a")
		}
	}
}

// TestProtect: a protected disk's live export is read-only, its writes
// fail, it cannot be deleted; unprotected it is writable again.
func TestProtect(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	if _, err := h.Create("r", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	open, err := h.Open(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	h.Protect("r", "replica of g")
	if err := open.WriteAt(ctx, make([]byte, 512), 0, false); !errors.Is(err, nbd.ErrReadOnly) || !errors.Is(err, host.ErrProtected) {
		t.Fatalf("write to a protected disk: %v", err)
	}
	open.Close()
	x, err := h.Open(ctx, "r")
	if err != nil || !x.ReadOnly() {
		t.Fatalf("protected export: read-only %v, %v", x != nil && x.ReadOnly(), err)
	}
	x.Close()
	if err := h.Delete("r"); !errors.Is(err, disk.ErrBusy) {
		t.Fatalf("delete a protected disk: %v", err)
	}
	h.Unprotect("r")
	x, _ = h.Open(ctx, "r")
	if err := x.WriteAt(ctx, make([]byte, 512), 0, false); err != nil || x.ReadOnly() {
		t.Fatalf("unprotected: %v", err)
	}
	x.Close()
}

// TestVirtualExport: an added export opens by name and is listed; a disk's
// name is refused; removed, it is unknown.
func TestVirtualExport(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	if _, err := h.Create("d", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	d, _ := h.Disk("d")
	open := func(ctx context.Context) (nbd.Export, error) { return h.Open(ctx, "d") }
	if err := h.AddExport("d", open); !errors.Is(err, disk.ErrExists) {
		t.Fatalf("a disk's name: %v", err)
	}
	if err := h.AddExport("scratch", open); err != nil {
		t.Fatal(err)
	}
	x, err := h.Open(ctx, "scratch")
	if err != nil || x.Size() != d.Size() {
		t.Fatalf("open scratch: %v", err)
	}
	x.Close()
	h.RemoveExport("scratch")
	if _, err := h.Open(ctx, "scratch"); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("removed export: %v", err)
	}
}

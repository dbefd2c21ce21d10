package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// TestRollback: a disk changed after its backup goes back to the point,
// bit for bit, with only the changed chunks written (writes, a discard,
// and a chunk changed back to zero); the next backup is an incremental.
// A disk the point was not taken of is refused, and so are a rollback
// that CBT cannot answer for and one of the disk grown since.
func TestRollback(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const size = 16 << 20
	d, err := f.th.h.Create("vm", size, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(3))
	img := make([]byte, size)
	rng.Read(img[:size/2])
	d.WriteAt(img, 0)
	point := f.backup(t, "vm")
	p := make([]byte, 3<<16)
	rng.Read(p)
	d.WriteAt(p, 1<<20+512)                          // four chunks, unaligned
	d.WriteAt(bytes.Repeat([]byte{5}, 4096), 12<<20) // a zero chunk of the point gets data
	d.Zero(5<<20, 64<<10, true)                      // a data chunk of the point is discarded
	c, err := nbd.Dial(ctx, "nbd+unix:///vm?socket="+f.th.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := Rollback(ctx, RollbackOptions{Host: f.th, Disk: "vm", Repo: f.repo, Manifest: point.Manifest.ID,
		Target: nbdTarget{c}, ReadBack: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatal("the rolled-back disk differs from the restore point")
	}
	const changed = 6 << 16 // five 64 KiB blocks and the zero chunk
	if !res.RootVerified {
		t.Fatal("the rolled-back disk's root was not checked against the point's")
	}
	if res.ChangedBytes != changed || res.BytesWritten+res.ZeroSlots<<16 != changed || res.Verified != 6 {
		t.Fatalf("rollback: %d bytes changed, %d written, %d zero chunks, %d verified; want %d changed", res.ChangedBytes, res.BytesWritten, res.ZeroSlots, res.Verified, changed)
	}
	if next := f.backup(t, "vm"); next.Mode != "incremental" || next.ReadBytes != changed {
		t.Fatalf("backup after the rollback: %+v", next)
	}

	if _, err := f.th.h.Create("other", size, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}}); err != nil {
		t.Fatal(err)
	}
	_, err = Rollback(ctx, RollbackOptions{Host: f.th, Disk: "other", Repo: f.repo, Manifest: point.Manifest.ID, Target: nbdTarget{c}})
	if !errors.Is(err, ErrNotThisDisk) {
		t.Fatalf("rollback of another disk: %v", err)
	}
	if err := d.ResetCBT(); err != nil {
		t.Fatal(err)
	}
	d.WriteAt(p, 0)
	_, err = Rollback(ctx, RollbackOptions{Host: f.th, Disk: "vm", Repo: f.repo, Manifest: point.Manifest.ID, Target: nbdTarget{c}})
	if !errors.Is(err, ErrChangeIDInvalid) {
		t.Fatalf("rollback after a CBT reset: %v", err)
	}
	if err := d.Grow(size + 1<<20); err != nil {
		t.Fatal(err)
	}
	_, err = Rollback(ctx, RollbackOptions{Host: f.th, Disk: "vm", Repo: f.repo, Manifest: point.Manifest.ID, Target: nbdTarget{c}})
	if !errors.Is(err, ErrNotThisDisk) {
		t.Fatalf("rollback of the disk grown since: %v", err)
	}
	if snaps := d.Snapshots(); len(snaps) != 0 {
		t.Fatalf("rollbacks left snapshots %v", snaps)
	}
}

// TestRollbackRootMismatch: a target that writes a chunk at the wrong
// offset and reads it back from there passes every chunk's read-back;
// the disk's root after the rollback does not equal the point's, and the
// rollback fails with ErrRootMismatch instead of reporting success.
func TestRollbackRootMismatch(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const size = 8 << 20
	d, err := f.th.h.Create("vm", size, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	rand.New(rand.NewSource(4)).Read(img[:size/2])
	d.WriteAt(img, 0)
	point := f.backup(t, "vm")
	d.WriteAt(bytes.Repeat([]byte{9}, 64<<10), 1<<20)
	c, err := nbd.Dial(ctx, "nbd+unix:///vm?socket="+f.th.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = Rollback(ctx, RollbackOptions{Host: f.th, Disk: "vm", Repo: f.repo, Manifest: point.Manifest.ID,
		Target: misplaced{nbdTarget{c}, 1 << 20, 3 << 20}, ReadBack: true})
	if !errors.Is(err, ErrRootMismatch) {
		t.Fatalf("rollback through a target that misplaces a chunk: %v, want ErrRootMismatch", err)
	}
	if snaps := d.Snapshots(); len(snaps) != 0 {
		t.Fatalf("the root check left snapshots %v", snaps)
	}
}

// misplaced moves writes and reads at offset from to offset to: a target
// whose read-back agrees with its own mistake.
type misplaced struct {
	nbdTarget
	from, to int64
}

func (m misplaced) at(off int64) int64 {
	if off == m.from {
		return m.to
	}
	return off
}

func (m misplaced) WriteAt(ctx context.Context, p []byte, off int64) error {
	return m.nbdTarget.WriteAt(ctx, p, m.at(off))
}

func (m misplaced) ReadAt(ctx context.Context, p []byte, off int64) error {
	return m.nbdTarget.ReadAt(ctx, p, m.at(off))
}

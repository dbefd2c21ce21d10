package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// flipSource flips one byte at off in what it reads: on the first read
// that covers off only, or on every one (a transport bug).
type flipSource struct {
	Source
	off    int64
	always bool
	flips  atomic.Int32
}

func (s *flipSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := s.Source.ReadAt(ctx, p, off); err != nil {
		return err
	}
	if s.off >= off && s.off < off+int64(len(p)) && (s.always || s.flips.Load() == 0) {
		s.flips.Add(1)
		p[s.off-off] ^= 0x40
	}
	return nil
}

// forgetful is a deliberately broken CBT: it drops the changed area
// holding offset drop from what it reports.
type forgetful struct {
	Host
	drop int64
}

func (h forgetful) ChangedAreas(ctx context.Context, disk, snap string, start int64, since string) (*Areas, error) {
	a, err := h.Host.ChangedAreas(ctx, disk, snap, start, since)
	if err != nil || since == "*" {
		return a, err
	}
	kept := a.Changed[:0]
	for _, c := range a.Changed {
		if h.drop < c.Start || h.drop >= c.Start+c.Length {
			kept = append(kept, c)
		}
	}
	a.Changed = kept
	return a, nil
}

// hosts that keep a tree: with leaves (mismatches located exactly) or
// with only the root (the blocks read are re-read).
type withLeaves struct {
	Host
	RootHost
	LeafHost
}

type rootOnly struct {
	Host
	RootHost
}

// TestRootMismatch: a byte flipped by the transport or an area a broken
// CBT forgot makes the point's root differ from the host's; the backup
// names the leaves, re-reads them once and commits only if that heals
// it, else fails with ErrRootMismatch and commits nothing.
func TestRootMismatch(t *testing.T) {
	const changedAt, forgotAt = 2 << 20, 5 << 20
	tests := []struct {
		name    string
		flip    int64 // offset flipped by the transport, -1: none
		always  bool
		forget  bool // the host forgets the area at forgotAt
		leaves  bool // the host is a LeafHost
		healed  bool
		named   string // in the note or the error
		rereadN int64  // bytes re-read when healed
	}{
		{"flip once, leaves", changedAt + 100, false, false, true, true, "leaf 32 at offset 2097152", 64 << 10},
		{"flip once, root only", changedAt + 100, false, false, false, true, "the blocks read (2097152+65536", 128 << 10},
		{"flip always, leaves", changedAt + 100, true, false, true, false, "leaf 32 at offset 2097152", 0},
		{"flip always, root only", changedAt + 100, true, false, false, false, "2097152+65536", 0},
		{"forgotten area, leaves", -1, false, true, true, true, "leaf 80 at offset 5242880", 64 << 10},
		{"forgotten area, root only", -1, false, true, false, false, "the blocks read", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			d, img := randomDisk(t, f, 8<<20)
			first := f.backup(t, "vm")
			for _, off := range []int64{changedAt, forgotAt} {
				p := bytes.Repeat([]byte{byte(off >> 20)}, 64<<10)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(img[off:], p)
			}
			var h Host = f.th
			if tt.forget {
				h = forgetful{f.th, forgotAt}
			}
			if tt.leaves {
				h = withLeaves{h, f.th, f.th}
			} else {
				h = rootOnly{h, f.th}
			}
			src := &flipSource{off: tt.flip, always: tt.always}
			open := func(ctx context.Context, disk, snap string) (Source, error) {
				s, err := f.th.open(ctx, disk, snap)
				src.Source = s
				return src, err
			}
			res, err := Run(ctx, Options{Disk: "vm", Host: h, Repo: f.repo, Open: open})
			if !tt.healed {
				if !errors.Is(err, ErrRootMismatch) || !strings.Contains(err.Error(), tt.named) {
					t.Fatalf("want ErrRootMismatch naming %q, got %v", tt.named, err)
				}
				if ms := listNames(t, f.be, backend.Manifests); len(ms) != 1 {
					t.Fatalf("%d manifests after a failed proof, want the first only", len(ms))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f.th.checkRoot(t, res)
			if !strings.Contains(res.RootNote, tt.named) || res.RereadBytes != tt.rereadN {
				t.Fatalf("note %q (want %q), re-read %d (want %d)", res.RootNote, tt.named, res.RereadBytes, tt.rereadN)
			}
			if got := f.restoreInto(t, res.Manifest.ID, "r", 8<<20); !bytes.Equal(got, img) {
				t.Fatal("the healed point differs from the disk")
			}
			_ = first
		})
	}
}

// TestRestoreVerifyRoot: a restore target wrongly taken for zero (so
// the read-back's per-chunk check skips the zero slots) is caught by the
// root of the restored image, naming the leaf.
func TestRestoreVerifyRoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	d, _ := randomDisk(t, f, 4<<20)
	if err := d.Zero(1<<20, 64<<10, true); err != nil { // a zero slot
		t.Fatal(err)
	}
	id := f.backup(t, "vm").Manifest.ID
	good := &memTarget{data: make([]byte, 4<<20), lossAt: -1}
	res, err := Restore(ctx, RestoreOptions{Repo: f.repo, Manifest: id, Target: good, TargetIsZero: true, ReadBack: true})
	if err != nil || !res.RootVerified {
		t.Fatalf("restore into a zero target: %+v, %v", res, err)
	}
	bad := &memTarget{data: make([]byte, 4<<20), lossAt: -1}
	bad.data[1<<20+7] = 1 // not zero after all
	_, err = Restore(ctx, RestoreOptions{Repo: f.repo, Manifest: id, Target: bad, TargetIsZero: true, ReadBack: true})
	if !errors.Is(err, ErrRootMismatch) || !strings.Contains(err.Error(), "leaf 16 at offset 1048576") {
		t.Fatalf("restore into a damaged target: %v", err)
	}
}

// TestCheckProvesTrees: check --read-data refuses a point whose tree
// (consistent with its own root) does not hash its data; its subset
// variant too when it reads the pack of the chunk concerned.
func TestCheckProvesTrees(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	randomDisk(t, f, 4<<20)
	m := f.backup(t, "vm").Manifest
	tr, err := f.repo.LoadTree(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Set(3, hashtree.LeafHash([]byte("not the data"), tr.BlockSize())); err != nil {
		t.Fatal(err)
	}
	w, err := f.repo.NewWriter(ctx, m, m.Meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetTree(repo.FullTree{Tree: tr}, true); err != nil {
		t.Fatal(err)
	}
	bad, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []repo.CheckOptions{{ReadData: true}, {ReadData: true, ReadPack: func(repo.ID) bool { return true }}} {
		res, err := f.repo.Check(ctx, o)
		if err == nil || !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "leaf 3 (offset 196608)") {
			t.Fatalf("check of a tampered tree: %v", err)
		}
		if o.ReadPack == nil && res.RootsProven != 1 {
			t.Fatalf("%d roots proven, want the good point's", res.RootsProven)
		}
	}
	if res, err := f.repo.Check(ctx, repo.CheckOptions{}); err != nil || res.RootsProven != 0 {
		t.Fatalf("check without data: %+v, %v", res, err)
	}
	if err := f.repo.Forget(ctx, bad.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRootAfterGrow: the tree follows the disk's size: grown to a size
// that ends inside a block, then again, each incremental is proven
// (f.backup checks the root against the host's) and restores.
func TestRootAfterGrow(t *testing.T) {
	f := newFixture(t)
	d, img := randomDisk(t, f, 4<<20)
	f.backup(t, "vm")
	for _, size := range []int64{6<<20 + 4<<10, 9 << 20} {
		if err := d.Grow(size); err != nil {
			t.Fatal(err)
		}
		img = append(img, make([]byte, size-int64(len(img)))...)
		p := bytes.Repeat([]byte{0xa5}, 4<<10)
		if _, err := d.WriteAt(p, size-4<<10); err != nil {
			t.Fatal(err)
		}
		copy(img[size-4<<10:], p)
		res := f.backup(t, "vm")
		if res.Mode != "incremental" {
			t.Fatalf("after growing to %d: %s (%s)", size, res.Mode, res.Reason)
		}
		if got := f.restoreInto(t, res.Manifest.ID, fmt.Sprintf("r%d", size), size); !bytes.Equal(got, img) {
			t.Fatalf("the point of %d bytes differs from the disk", size)
		}
	}
}

// TestTreeMemoryBounded: a full backup of a large disk written sparsely
// everywhere (a block in every leaf group) holds the groups under the
// copy's work in progress, not every group until Commit (32 bytes a
// 64 KiB block: 512 MiB for 1 TiB; 32 groups here), and each group only
// its data leaves (docs/repository.md T10); the groups stored
// as the copy passed them make the point's root, and an incremental
// over them too. One worker makes the bound exact: the copy's window is
// then one run. The host keeps no tree (hashing 8 GiB would take most of
// a minute): the roots are checked against one built in the test.
func TestTreeMemoryBounded(t *testing.T) {
	const size, span = 8 << 30, repo.TreeGroupLeaves * (64 << 10) // 32 groups of 256 MiB
	ctx := context.Background()
	f := newFixture(t)
	d, err := f.th.h.Create("vm", size, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := hashtree.New(size, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b byte) {
		p := bytes.Repeat([]byte{b}, 64<<10)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		if err := want.Set(off/(64<<10), hashtree.LeafHash(p, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	backup := func() *Result {
		res, err := Run(ctx, Options{Disk: "vm", Host: plainHost{f.th}, Repo: f.repo, Open: f.th.open, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := f.repo.LoadTree(ctx, res.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		if res.Root != want.Root() || tr.Root() != want.Root() {
			t.Fatalf("%s: root %x, stored tree's %x, want %x", res.Mode, res.Root, tr.Root(), want.Root())
		}
		return res
	}
	for off := int64(0); off < size; off += span {
		write(off+off/span*(64<<10), byte(off/span)+1)
	}
	// A group holds its data leaves alone (one here: 34 bytes), not the
	// 4096 leaves of a dense group (128 KiB).
	const sparseBytes = 1 << 10
	if full := backup(); full.treeGroups != 1 || full.treeHeld > sparseBytes {
		t.Fatalf("full backup held %d groups, %d bytes of leaves at its peak, want one sparse group (all %d groups dense: %d bytes)", full.treeGroups, full.treeHeld, size/span, size/span*repo.TreeGroupLeaves*32)
	}
	write(3*span+5<<20, 0xee)
	write(31*span, 0xef)
	if inc := backup(); inc.Mode != "incremental" || inc.treeGroups != 1 || inc.treeHeld > sparseBytes {
		t.Fatalf("%s held %d groups, %d bytes of leaves", inc.Mode, inc.treeGroups, inc.treeHeld)
	}
}

// plainHost keeps no hash tree: the backup computes its root.
type plainHost struct{ Host }

package api_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// TestSnapshotRootAndLeaves: the root the API answers (root route, get,
// list) is a full Build of the image the test wrote, and the leaves of
// changes are the leaves of that build; a disk without CBT has no tree.
func TestSnapshotRootAndLeaves(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	const size, gran = 8 * mib, 65536
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: size, CBTGranularity: gran}); err != nil {
		t.Fatal(err)
	}
	d, _ := e.Host.Disk("vm1")
	img := make([]byte, size)
	rng := rand.New(rand.NewSource(1))
	write := func(off int64, n int) {
		rng.Read(img[off : off+int64(n)])
		if _, err := d.WriteAt(img[off:off+int64(n)], off); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 4096)
	write(3*mib+512, 8192)
	s1, err := c.CreateSnapshot(ctx, "vm1", "s1", "")
	if err != nil {
		t.Fatal(err)
	}
	checkRoot(t, c, "s1", img)
	write(5*mib, 4096)
	copy(img[0:4096], make([]byte, 4096))
	if err := d.Trim(0, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "vm1", "s2", ""); err != nil {
		t.Fatal(err)
	}
	want := checkRoot(t, c, "s2", img)
	_, areas, leaves, err := c.AllChangedAreasLeaves(ctx, "vm1", "s2", s1.ChangeID)
	if err != nil || len(areas) != 2 || len(leaves) != 2 {
		t.Fatalf("changes with leaves: %+v %v %v", areas, leaves, err)
	}
	for i, a := range areas {
		for k, l := range leaves[i] {
			w, _ := want.Leaf(a.Start/gran + int64(k))
			if l != hex.EncodeToString(w[:]) {
				t.Fatalf("area %+v leaf %d: %s, want %x", a, k, l, w)
			}
		}
	}
	snaps, err := c.ListSnapshots(ctx, "vm1")
	if err != nil || snaps[1].Root != hexRoot(want) || snaps[1].TreeBlockSize != gran {
		t.Fatalf("list %+v %v", snaps, err)
	}
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "nocbt", Size: mib, DisableCBT: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "nocbt", "s", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SnapshotRoot(ctx, "nocbt", "s"); !errors.Is(err, client.ErrNoTree) {
		t.Fatalf("root without CBT: %v", err)
	}
	if _, err := c.SnapshotRoot(ctx, "vm1", "nope"); !errors.Is(err, client.ErrSnapshotNotFound) {
		t.Fatalf("root of a missing snapshot: %v", err)
	}
}

func hexRoot(t *hashtree.Tree) string {
	r := t.Root()
	return hex.EncodeToString(r[:])
}

// checkRoot compares the host's root of snap with a Build of img.
func checkRoot(t *testing.T, c *client.Client, snap string, img []byte) *hashtree.Tree {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want, err := hashtree.Build(ctx, bytes.NewReader(img), int64(len(img)), 65536, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.SnapshotRoot(ctx, "vm1", snap)
	if err != nil || r.Root != hexRoot(want) || r.BlockSize != 65536 || r.Size != int64(len(img)) {
		t.Fatalf("root of %s: %+v %v, want %s", snap, r, err, hexRoot(want))
	}
	if s, err := c.Snapshot(ctx, "vm1", snap); err != nil || s.Root != r.Root || s.TreeBlockSize != 65536 {
		t.Fatalf("snapshot %s: %+v %v", snap, s, err)
	}
	return want
}

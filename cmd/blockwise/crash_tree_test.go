package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/nbd"
)

// sparseImage reads as zeroes but for the extents written into it.
type sparseImage map[int64][]byte

func (s sparseImage) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for o, b := range s {
		lo, hi := max(o, off), min(o+int64(len(b)), off+int64(len(p)))
		if lo < hi {
			copy(p[lo-off:hi-off], b[lo-o:hi-o])
		}
	}
	return len(p), nil
}

// kill -9 of `blockwise serve` right after snapshots, before their
// trees were surely computed or written: after a restart `snapshot show`
// waits for the trees the host rebuilds (docs/format.md T4), and every
// root equals a full Build of what was written.
func TestKilledServeSnapshotRoots(t *testing.T) {
	ctx := context.Background()
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "256M")
	d.must(t, "snapshot", "create", "vm", "empty")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := sparseImage{}
	for i := int64(0); i < 16; i++ {
		off := i*(15<<20) + i*4096
		b := bytes.Repeat([]byte{byte(i + 1)}, 20<<10)
		if err := c.WriteAt(ctx, b, off, false); err != nil {
			t.Fatal(err)
		}
		img[off] = b
	}
	c.Close()
	d.must(t, "snapshot", "create", "vm", "written")
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()

	d2 := startServeIn(t, d.dir)
	defer sigterm(t, d2)
	for snap, want := range map[string]sparseImage{"empty": {}, "written": img} {
		var s client.Snapshot
		d2.jsonOut(t, &s, "snapshot", "show", "vm", snap)
		tr, err := hashtree.Build(ctx, want, 256<<20, 64<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		r := tr.Root()
		if s.Root != hex.EncodeToString(r[:]) || s.TreeBlockSize != 64<<10 {
			t.Fatalf("snapshot %s after kill -9: root %q (block %d), a full build %x", snap, s.Root, s.TreeBlockSize, r)
		}
	}
	if out := d2.must(t, "snapshot", "list", "vm"); !strings.Contains(out, "ROOT") {
		t.Fatalf("list: %s", out)
	}
}

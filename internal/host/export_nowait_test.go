package host

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/testfs"
)

// TestExportReadNoWait: live and snapshot exports, as the host hands them
// to the NBD server (wrapped for counting), read without waiting: a read
// of data evicted from the page cache fails with nbd.ErrWouldBlock (the
// server then reads on a worker), a cached one returns ReadAt's bytes and
// is counted in the disk's I/O stats.
func TestExportReadNoWait(t *testing.T) {
	// No hash trees: their background reads of the new snapshot would
	// put evicted pages back in the cache while the test looks.
	ds, err := disk.OpenDatastore(t.TempDir(), disk.WithHashTrees(false))
	if err != nil {
		t.Fatal(err)
	}
	h := New(ds)
	defer h.Close()
	d, err := h.Create("vm1", 1<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("nowait!"), 1<<20/7+1)[:1<<20]
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vm1", "vm1@s1"} {
		x, err := h.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		nw, ok := x.(nbd.NoWaitReader)
		if !ok {
			t.Fatalf("%s: export %T is no NoWaitReader", name, x)
		}
		evict(t, d)
		p := make([]byte, 64<<10)
		if err := nw.ReadAtNoWait(ctx, p, 128<<10); !errors.Is(err, nbd.ErrWouldBlock) {
			t.Fatalf("%s: uncached read: %v, want ErrWouldBlock", name, err)
		}
		if err := x.ReadAt(ctx, p, 128<<10); err != nil {
			t.Fatal(err)
		}
		clear(p)
		if err := nw.ReadAtNoWait(ctx, p, 128<<10); err != nil || !bytes.Equal(p, data[128<<10:192<<10]) {
			t.Fatalf("%s: cached read: %v (or other bytes)", name, err)
		}
		x.Close()
	}
	want := IOStats{ReadOps: 4, ReadBytes: 4 * 64 << 10, WriteOps: 0}
	if st := h.OpenDisks(); len(st) != 1 || st[0].IO != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

func evict(t *testing.T, d *disk.Disk) {
	t.Helper()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(d.Path(), "*"))
	testfs.Evict(t, names...)
}

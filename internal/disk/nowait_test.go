package disk

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/testfs"
)

// dropCaches writes back and evicts every file of d from the page cache.
func dropCaches(t *testing.T, d *Disk) {
	t.Helper()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(d.Path(), "*"))
	if err != nil {
		t.Fatal(err)
	}
	testfs.Evict(t, names...)
}

type noWaitReader interface {
	ReadAt(p []byte, off int64) (int, error)
	ReadAtNoWait(p []byte, off int64) (int, error)
}

// checkNoWait: a read of evicted data would block; once read it is
// served from memory with the bytes ReadAt returns.
func checkNoWait(t *testing.T, r noWaitReader, off int64, n int) {
	t.Helper()
	got := make([]byte, n)
	if _, err := r.ReadAtNoWait(got, off); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("uncached read %d+%d: %v, want ErrWouldBlock", off, n, err)
	}
	want := make([]byte, n)
	if _, err := r.ReadAt(want, off); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAtNoWait(got, off); err != nil {
		t.Fatalf("cached read %d+%d: %v", off, n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("cached read %d+%d differs from ReadAt", off, n)
	}
}

// TestReadAtNoWait: Disk and Snapshot reads through the page cache only,
// on a flat disk and through a chain whose top holds some grains, zeroed
// grains, and past what the top file holds; ErrWouldBlock where data is
// not cached, the disk's barrier is taken or a compare-and-write stores.
func TestReadAtNoWait(t *testing.T) {
	// No hash trees: their background reads of the new snapshot would
	// put evicted pages back in the cache while the test looks.
	_, d := newDisk(t, 8<<20, Options{}, WithHashTrees(false))
	for i := range int64(8) {
		d.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 1<<20), i<<20)
	}
	dropCaches(t, d)
	checkNoWait(t, d, 1<<20, 256<<10)

	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte{0xee}, 8192), 3<<20+4096)
	must(t, d.Zero(5<<20, 1<<20, true))
	dropCaches(t, d)
	checkNoWait(t, d, 3<<20, 3<<20) // flat, delta, zeroed, flat
	view, err := d.OpenSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	// Evict again: the disk's reads above cached more than they asked
	// for, before as well as after (readahead in large folios is aligned
	// to the folio: a miss at 3 MiB read from 2 MiB on a 6.18 kernel).
	dropCaches(t, d)
	checkNoWait(t, view, 2<<20, 4<<20)

	p := make([]byte, 4096)
	d.barrier.Lock()
	_, err = d.ReadAtNoWait(p, 3<<20)
	_, serr := view.ReadAtNoWait(p, 3<<20)
	d.barrier.Unlock()
	if !errors.Is(err, ErrWouldBlock) || !errors.Is(serr, ErrWouldBlock) {
		t.Fatalf("reads under the exclusive barrier: %v, %v; want ErrWouldBlock", err, serr)
	}
	done := d.cawStoring(3<<20, 4096)
	_, err = d.ReadAtNoWait(p, 3<<20)
	done()
	if !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("read during a compare-and-write: %v, want ErrWouldBlock", err)
	}
	if _, err := d.ReadAtNoWait(p, 8<<20); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package fsutil

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/testfs"
)

// TestReadNoWait: a range dropped from the page cache gives
// ErrWouldBlock (the caller must not stall on it); once read the normal
// way it is served from the cache, and past the file's end reads zeroes
// as ReadFull does.
func TestReadNoWait(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dropCache(t, f)
	buf := make([]byte, 64<<10)
	err = ReadNoWait(f, buf, 128<<10)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no RWF_NOWAIT here")
	}
	if !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("uncached read: %v, want ErrWouldBlock", err)
	}
	if err := ReadFull(f, buf, 128<<10); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	if err := ReadNoWait(f, buf, 128<<10); err != nil {
		t.Fatalf("cached read: %v", err)
	}
	if !bytes.Equal(buf, data[128<<10:192<<10]) {
		t.Fatal("cached read returned other data")
	}
	// The last 4 KiB of the file and 4 KiB past its end.
	must(t, ReadFull(f, buf[:4096], 1<<20-4096))
	tail := bytes.Repeat([]byte{0xff}, 8192)
	if err := ReadNoWait(f, tail, 1<<20-4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tail[:4096], data[1<<20-4096:]) || !bytes.Equal(tail[4096:], make([]byte, 4096)) {
		t.Fatal("read across the end: want the data then zeroes")
	}
}

// dropCache writes f back and drops its pages from the page cache.
func dropCache(t *testing.T, f *os.File) {
	t.Helper()
	must(t, f.Sync())
	testfs.Evict(t, f.Name()) // waits out a readahead still in flight
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

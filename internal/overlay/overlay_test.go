package overlay

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestOverlayReopen: synced writes and zeroes are present after a
// reopen, unsynced ones are not (their records never reached the
// journal), and the data reads back.
func TestOverlayReopen(t *testing.T) {
	dir := t.TempDir()
	const size = 1<<20 + 1000 // a short last block
	o, err := Open(dir, "p1", size)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, 2*BlockSize)
	must(t, o.WriteBlocks(data, 3*BlockSize))
	must(t, o.ZeroBlocks(10*BlockSize, BlockSize))
	must(t, o.WriteBlocks(make([]byte, 1000), size-1000))
	must(t, o.Sync())
	must(t, o.WriteBlocks(data[:BlockSize], 20*BlockSize)) // never synced
	o.Close()
	o, err = Open(dir, "p1", size)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for b, want := range map[uint64]bool{2: false, 3: true, 4: true, 5: false, 10: true, 20: false, o.Blocks() - 1: true} {
		if o.Present(b) != want {
			t.Errorf("block %d present %v, want %v", b, !want, want)
		}
	}
	if o.PresentBlocks() != 4 || !o.AnyPresent(0, 4) || o.AnyPresent(5, 5) || !o.AnyPresent(5, 6) {
		t.Errorf("present %d, any %v %v %v", o.PresentBlocks(), o.AnyPresent(0, 4), o.AnyPresent(5, 5), o.AnyPresent(5, 6))
	}
	got := make([]byte, 2*BlockSize)
	must(t, o.ReadAt(got, 3*BlockSize))
	if !bytes.Equal(got, data) {
		t.Error("data read back differs")
	}
	if err := o.WriteBlocks(data[:100], 0); err == nil {
		t.Error("a partial block was taken")
	}
}

// TestOverlayRefuses: a second Open of the same directory (in use), an
// overlay of another point, and a damaged journal are typed errors.
func TestOverlayRefuses(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, "p1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, "p1", 1<<20); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v", err)
	}
	must(t, o.WriteBlocks(make([]byte, BlockSize), 0))
	must(t, o.WriteBlocks(make([]byte, BlockSize), 8*BlockSize))
	must(t, o.Sync())
	must(t, o.WriteBlocks(make([]byte, BlockSize), 16*BlockSize))
	must(t, o.Sync())
	o.Close()
	if _, err := Open(dir, "p2", 1<<20); !errors.Is(err, ErrMismatch) {
		t.Fatalf("another point: %v", err)
	}
	j := filepath.Join(dir, journalName)
	b, _ := os.ReadFile(j)
	// A torn tail (half a record) is cut.
	must(t, os.WriteFile(j, append(b, 1, 2, 3), 0o600))
	o, err = Open(dir, "p1", 1<<20)
	if err != nil || o.PresentBlocks() != 3 {
		t.Fatalf("torn tail: %v", err)
	}
	o.Close()
	// A damaged record followed by a good one is damage, not a tail.
	b[headerSize+3] ^= 1
	must(t, os.WriteFile(j, b, 0o600))
	if _, err := Open(dir, "p1", 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged record: %v", err)
	}
	// A damaged last record is a torn tail: the write was not flushed.
	b[headerSize+3] ^= 1
	b[len(b)-5] ^= 1
	must(t, os.WriteFile(j, b, 0o600))
	if o, err = Open(dir, "p1", 1<<20); err != nil || o.PresentBlocks() != 2 {
		t.Fatalf("damaged last record: %v", err)
	}
	o.Close()
}

// TestOverlayCompacts: a journal of many small records is rewritten at
// Open as one record per run, with the same blocks present.
func TestOverlayCompacts(t *testing.T) {
	dir := t.TempDir()
	const size, runs = 128 << 20, compactMin + 1
	o, err := Open(dir, "p1", size)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, BlockSize)
	for _, k := range []int64{0, 2, 1} { // runs of 3 blocks, each written as 3 records
		for i := range int64(runs) {
			must(t, o.WriteBlocks(blk, (4*i+k)*BlockSize))
		}
		if k != 2 {
			must(t, o.Sync())
		}
	}
	o.Close()
	before, _ := os.Stat(filepath.Join(dir, journalName))
	if o, err = Open(dir, "p1", size); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(dir, journalName))
	if o.PresentBlocks() != 3*runs || after.Size() != headerSize+runs*recordSize || before.Size() != headerSize+3*runs*recordSize {
		t.Fatalf("%d present, journal %d -> %d bytes", o.PresentBlocks(), before.Size(), after.Size())
	}
	must(t, o.WriteBlocks(blk, 3*BlockSize)) // appends after the rewrite
	must(t, o.Sync())
	o.Close()
	if o, err = Open(dir, "p1", size); err != nil || o.PresentBlocks() != 3*runs+1 {
		t.Fatalf("after a write on the compacted journal: %v", err)
	}
	o.Close()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzParseJournal: any bytes parse to runs inside the disk or a typed
// error, never a panic.
func FuzzParseJournal(f *testing.F) {
	hdr := make([]byte, headerSize)
	copy(hdr, journalMagic)
	hdr[8], hdr[9] = byte(BlockSize&0xff), byte(BlockSize>>8)
	f.Add(hdr)
	f.Add(appendRecord(append([]byte(nil), hdr...), run{3, 5}))
	f.Add(appendRecord(appendRecord(append([]byte(nil), hdr...), run{0, 1}), run{1 << 40, 2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		const blocks = 4096
		runs, end, err := parseJournal(b, blocks)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if end > len(b) || (end-headerSize)%recordSize != 0 {
			t.Fatalf("end %d of %d bytes", end, len(b))
		}
		for _, r := range runs {
			if r.n == 0 || r.first+r.n > blocks {
				t.Fatalf("run %+v outside %d blocks", r, blocks)
			}
		}
	})
}

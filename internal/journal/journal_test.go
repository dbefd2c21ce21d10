package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/internal/metafile"
	"github.com/blockwise/blockwise/internal/testfs"
	"github.com/blockwise/blockwise/internal/vfs"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

func TestAppendReplayTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	l, err := Create(vfs.Default, p, 7)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{1, []byte("a")}, {2, nil}, {3, bytes.Repeat([]byte{9}, 1000)}}
	if err := l.Append(want...); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A torn tail: half a record.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(Encode(4, []byte("torn"))[:6])
	f.Close()

	l, recs, err := Open(vfs.Default, p, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[2].Type != 3 || !bytes.Equal(recs[2].Payload, want[2].Payload) {
		t.Fatalf("replayed %d records", len(recs))
	}
	// Appending after a torn tail must produce a clean journal.
	if err := l.Append(Record{5, []byte("after")}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	recs, err = ReadAll(vfs.Default, p, 7)
	if err != nil || len(recs) != 4 || recs[3].Type != 5 {
		t.Fatalf("after torn tail: %d records, %v", len(recs), err)
	}
	if _, err := ReadAll(vfs.Default, p, 8); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong generation: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(append(Encode(1, []byte("x")), Encode(2, nil)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, n := Parse(b)
		if n > len(b) {
			t.Fatal("span beyond input")
		}
		var re []byte
		for _, r := range recs {
			re = append(re, Encode(r.Type, r.Payload)...)
		}
		if !bytes.Equal(re, b[:n]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// TestAppendNoSpace: an append the file system has no room for leaves the
// log as it was (no torn record on disk), and the same append succeeds
// once there is room; replay then finds exactly the appended records.
func TestAppendNoSpace(t *testing.T) {
	fs := testfs.NewTmpfs(t, "256k")
	dir := fs.Dir
	p := filepath.Join(dir, "j.log")
	l, err := Create(vfs.Default, p, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	first := Record{1, []byte("first")}
	if err := l.Append(first); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	big := Record{2, bytes.Repeat([]byte{7}, 64<<10)}
	if err := l.Append(big); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full file system: %v, want ENOSPC", err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != l.Size() {
		t.Fatalf("after a failed append the file holds %d bytes, the log %d (%v)", st.Size(), l.Size(), err)
	}
	os.Remove(filler)
	if err := l.Append(big); err != nil {
		t.Fatalf("append once there is room: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadAll(vfs.Default, p, 3)
	if err != nil || len(recs) != 2 || recs[0].Type != 1 || !bytes.Equal(recs[1].Payload, big.Payload) {
		t.Fatalf("replayed %d records (%v), want first and big", len(recs), err)
	}
}

// Journals written by version 1 (before CBT cover records) still replay;
// a version this build does not know is refused.
func TestOpenVersions(t *testing.T) {
	for _, tc := range []struct {
		version uint16
		ok      bool
	}{{1, true}, {2, true}, {3, false}} {
		p := filepath.Join(t.TempDir(), "j.log")
		gen := []byte{7, 0, 0, 0, 0, 0, 0, 0}
		data := append(metafile.Encode(magic, tc.version, gen), Encode(0x11, []byte("r"))...)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, err := ReadAll(vfs.Default, p, 7)
		if tc.ok && (err != nil || len(recs) != 1 || recs[0].Type != 0x11) {
			t.Errorf("version %d: %d records, %v", tc.version, len(recs), err)
		}
		if !tc.ok && !errors.Is(err, ErrCorrupt) {
			t.Errorf("version %d: %v", tc.version, err)
		}
	}
}

// A reserve keeps appends fitting after the file system fills, up to its
// size; Short says when less than an eighth of it is left, and replay
// sees nothing of the preallocated space. Files that cannot preallocate
// keep no reserve and are never Short.
func TestReserve(t *testing.T) {
	fs := testfs.NewTmpfs(t, "1m")
	p := filepath.Join(fs.Dir, "j.log")
	l, err := Create(vfs.Default, p, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const reserve = 64 << 10
	l.Reserve(reserve)
	fillFS(t, fs.Dir)
	rec := Record{1, bytes.Repeat([]byte{5}, 1000)} // 1009 bytes framed
	var n int
	for ; !l.Short(); n++ {
		if err := l.Append(rec); err != nil {
			t.Fatalf("append %d into the reserve: %v", n, err)
		}
	}
	if left := reserve - (l.Size() - headerSize); n < 50 || left > reserve/8 || left < 0 {
		t.Fatalf("short after %d appends, %d bytes of the reserve left", n, left)
	}
	for l.Size()+1009 <= headerSize+reserve { // what is left still fits
		if err := l.Append(rec); err != nil {
			t.Fatalf("append into the rest of the reserve: %v", err)
		}
		n++
	}
	for err = nil; err == nil; n++ { // until the reserve's last page is used
		err = l.Append(rec)
	}
	n--
	if !errors.Is(err, syscall.ENOSPC) || l.Size() > headerSize+reserve+4096 {
		t.Fatalf("append past the reserve on a full file system: %v at %d bytes", err, l.Size())
	}
	if recs, err := ReadAll(vfs.Default, p, 3); err != nil || len(recs) != n {
		t.Fatalf("replay: %d records (%v), want %d", len(recs), err, n)
	}

	mem, err := Create(vfstest.NewCrashFS(), "/j.log", 1)
	if err != nil {
		t.Fatal(err)
	}
	mem.Reserve(reserve)
	if mem.Short() {
		t.Fatal("a file that cannot preallocate is short")
	}
}

// fillFS fills the file system of dir to its last page.
func fillFS(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			return
		}
	}
}

package disk

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/internal/testfs"
)

// withJournalReserve sets the journal reserve of the datastore's disks
// (journalReserve otherwise): a small one runs short after a few hundred
// block records.
func withJournalReserve(n int64) DatastoreOption {
	return func(ds *Datastore) { ds.reserve = n }
}

// On a full file system, overwrites of allocated blocks keep working
// after a checkpoint, though each is the first write to its block since
// then and needs a CBT block record (issue 15 item 5 with item 7): the
// records go into the journal's preallocated reserve, and when that runs
// short CBT falls back to region records (RecordRegionsOnly). A process
// crash at that point (the files as the page cache holds them, copied)
// must report every overwritten block: exactly those under the same boot
// ID while the reserve lasts, their whole region once it ran short, and
// the region under another boot ID either way.
func TestNoSpaceOverwriteCBT(t *testing.T) {
	tests := []struct {
		name    string
		reserve int64
		coarse  bool // the reserve runs short: regions only
	}{
		{"reserve lasts", journalReserve, false},
		{"reserve runs short", 16 << 10, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testOverwriteFull(t, tc.reserve, tc.coarse) })
	}
}

func testOverwriteFull(t *testing.T, reserve int64, coarse bool) {
	const size, blocks, g = 128 << 20, 1024, 64 << 10 // one 256 MiB region
	fsys := testfs.NewTmpfs(t, "16m")
	dir := filepath.Join(fsys.Dir, "ds")
	ds, err := OpenDatastore(dir, withJournalReserve(reserve))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	for i := range blocks { // 4 KiB into each block: 4 MiB allocated
		if _, err := d.WriteAt(pattern(i, 4096), int64(i)*g); err != nil {
			t.Fatal(err)
		}
	}
	// A snapshot closes the epoch; deleting it merges its (empty) delta
	// back, so the blocks are allocated in the flat file again and none
	// is recorded since the checkpoints.
	base, err := d.CreateSnapshot("base", "")
	if err != nil {
		t.Fatal(err)
	}
	task, err := d.DeleteSnapshot(base.ID)
	if err != nil {
		t.Fatal(err)
	}
	if <-task.Done(); task.Err() != nil {
		t.Fatal(task.Err())
	}
	if _, err := d.WriteAt(pattern(1000, 4096), 0); err != nil { // records the region
		t.Fatal(err)
	}
	fillUp(t, fsys.Dir)
	for i := 1; i < blocks; i++ {
		if _, err := d.WriteAt(pattern(i+1000, 4096), int64(i)*g); err != nil {
			t.Fatalf("overwrite of allocated block %d on a full file system: %v", i, err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush on a full file system: %v", err)
	}
	killed, rebooted := t.TempDir(), t.TempDir()
	for _, to := range []string{killed, rebooted} {
		if out, err := exec.Command("cp", "-a", "--sparse=always", dir+"/.", to).CombinedOutput(); err != nil {
			t.Fatalf("copy the datastore: %v: %s", err, out)
		}
	}
	want := int64(blocks * g)
	if coarse {
		want = size
	}
	checkReported(t, "same boot", killed, base.ChangeID, want)
	checkReported(t, "another boot", rebooted, base.ChangeID, size, WithBootID("another-boot"))
}

// checkReported: the disk "c" of the datastore at dir reports the first
// blocks bytes since the change ID, and so every block overwritten.
func checkReported(t *testing.T, what, dir, since string, want int64, opts ...DatastoreOption) {
	t.Helper()
	got, reported := changedSince(t, dir, since, opts...)
	for o := int64(0); o < want; o += 64 << 10 {
		if !got[o] {
			t.Fatalf("%s: block at %d overwritten and not reported", what, o)
		}
	}
	if reported != want {
		t.Fatalf("%s: %d KiB reported changed, want %d KiB", what, reported>>10, want>>10)
	}
}

// fillUp fills the file system of dir to the last byte.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1 << 20, 4096, 1} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), make([]byte, 4096), 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("file system not full: %v", err)
	}
}

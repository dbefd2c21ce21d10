package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testfs"
)

// smallTmpfs mounts a tmpfs of size (skipped unless root) and returns
// its directory and a function that resizes it.
func smallTmpfs(t *testing.T, size string) (string, func(string)) {
	fs := testfs.NewTmpfs(t, size)
	return fs.Dir, fs.Resize
}

func pattern(i int, n int) []byte { return bytes.Repeat([]byte{byte(i%251 + 1)}, n) }

// wantNoSpace: err says "full" both ways (the sentinel and the errno), and
// the disk has not failed.
func wantNoSpace(t *testing.T, d *Disk, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("%s on a full datastore: %v, want ErrNoSpace wrapping ENOSPC", what, err)
	}
	if err := d.failed(); err != nil {
		t.Fatalf("%s on a full datastore failed the disk: %v", what, err)
	}
	if err := d.Check(); err != nil {
		t.Fatalf("%s on a full datastore: check: %v", what, err)
	}
}

// TestNoSpaceFlat fills a flat disk on a small tmpfs: the write that finds
// no room fails with ErrNoSpace, overwrites and flushes keep working, a
// snapshot is refused with ErrNoSpace, and once the tmpfs is larger the
// same write and the snapshot succeed without reopening; every flushed
// write reads back, also after a reopen.
func TestNoSpaceFlat(t *testing.T) {
	dir, resize := smallTmpfs(t, "8m")
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("d", 32<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	const chunk = 1 << 20
	acked := 0 // chunks written and flushed
	var werr error
	for ; acked < 32; acked++ {
		if _, werr = d.WriteAt(pattern(acked, chunk), int64(acked)*chunk); werr != nil {
			break
		}
		if err := d.Flush(); err != nil {
			t.Fatalf("flush after chunk %d: %v", acked, err)
		}
	}
	if acked == 0 || acked == 32 {
		t.Fatalf("%d chunks fit in an 8 MiB tmpfs", acked)
	}
	wantNoSpace(t, d, "write", werr)
	// Overwrites of allocated blocks need no new space.
	if _, err := d.WriteAt(pattern(100, chunk), 0); err != nil {
		t.Fatalf("overwrite on a full datastore: %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush of an overwrite on a full datastore: %v", err)
	}
	_, err = d.CreateSnapshot("s1", "")
	wantNoSpace(t, d, "snapshot", err)
	if got := d.Snapshots(); len(got) != 0 {
		t.Fatalf("refused snapshot listed: %+v", got)
	}

	resize("64m")
	if _, err := d.WriteAt(pattern(acked, chunk), int64(acked)*chunk); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		t.Fatalf("snapshot after space was freed: %v", err)
	}
	if _, err := d.WriteAt(pattern(200, chunk), 31*chunk); err != nil {
		t.Fatalf("write into the new delta: %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	want := func(i int) []byte {
		switch i {
		case 0:
			return pattern(100, chunk)
		case 31:
			return pattern(200, chunk)
		}
		if i <= acked {
			return pattern(i, chunk)
		}
		return make([]byte, chunk)
	}
	verify := func(when string) {
		t.Helper()
		if err := d.Check(); err != nil {
			t.Fatalf("%s: check: %v", when, err)
		}
		buf := make([]byte, chunk)
		for i := range 32 {
			if _, err := d.ReadAt(buf, int64(i)*chunk); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, want(i)) {
				t.Fatalf("%s: chunk %d reads %#x…, want %#x…", when, i, buf[0], want(i)[0])
			}
		}
	}
	verify("after space was freed")
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if d, err = ds.Open("d"); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	verify("after reopening")
}

// TestNoSpaceFlushDelta fills the datastore while a delta has map changes
// not yet journalled, so the flush's journal append itself finds no room:
// the flush fails with ErrNoSpace but loses nothing, overwrites of present
// grains still work, and once there is room the same flush records every
// change (read back after a reopen, which replays the journal). The
// journal keeps no reserve here: a reserve would hold this flush's
// records, and the test is about one that finds no room.
func TestNoSpaceFlushDelta(t *testing.T) {
	dir, resize := smallTmpfs(t, "16m")
	ds, err := OpenDatastore(dir, withJournalReserve(0))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("d", 64<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	if _, err := d.CreateSnapshot("base", ""); err != nil {
		t.Fatal(err)
	}
	// Every other grain: the journal record of these maps is some KiB, more
	// than the journal's first page holds.
	const grains = 1536
	for i := range grains {
		if _, err := d.WriteAt(pattern(i, DefaultGrain), int64(2*i)*DefaultGrain); err != nil {
			t.Fatalf("grain %d: %v", 2*i, err)
		}
	}
	// Fill what is left, without flushing; what fit stays in the map.
	fillOff, fill := int64(32<<20), 0
	for ; fill < 32; fill++ {
		if _, err := d.WriteAt(pattern(fill+7, 1<<20), fillOff+int64(fill)<<20); err != nil {
			wantNoSpace(t, d, "write", err)
			break
		}
	}
	if fill == 32 {
		t.Fatal("a 16 MiB tmpfs took 32 MiB")
	}
	wantNoSpace(t, d, "flush", d.Flush())
	if _, err := d.WriteAt(pattern(999, DefaultGrain), 0); err != nil {
		t.Fatalf("overwrite of a present grain on a full datastore: %v", err)
	}
	_, err = d.CreateSnapshot("s2", "")
	wantNoSpace(t, d, "snapshot", err)

	resize("128m")
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after space was freed: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if d, err = ds.Open("d"); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, DefaultGrain)
	for i := range grains {
		want := pattern(i, DefaultGrain)
		if i == 0 {
			want = pattern(999, DefaultGrain)
		}
		if _, err := d.ReadAt(buf, int64(2*i)*DefaultGrain); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("grain %d reads %#x…, want %#x…", 2*i, buf[0], want[0])
		}
	}
	big := make([]byte, 1<<20)
	for i := range fill {
		if _, err := d.ReadAt(big, fillOff+int64(i)<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(big, pattern(i+7, 1<<20)) {
			t.Fatalf("fill chunk %d reads %#x…", i, big[0])
		}
	}
}

// TestNoSpaceConsolidation: a consolidation that finds no room to copy a
// delta into its parent waits (the disk keeps serving, nothing fails) and
// finishes by itself once space is freed.
func TestNoSpaceConsolidation(t *testing.T) {
	dir, _ := smallTmpfs(t, "16m")
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("d", 64<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	if _, err := d.CreateSnapshot("base", ""); err != nil {
		t.Fatal(err)
	}
	const chunk = 1 << 20
	for i := range 6 {
		if _, err := d.WriteAt(pattern(i, chunk), int64(i)*chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	// Fill the rest, then free a little: room for a checkpoint, not for
	// the 6 MiB the consolidation copies into flat.raw.
	filler, err := os.Create(dir + "/filler")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for {
		w, err := filler.Write(make([]byte, 64<<10))
		n += int64(w)
		if err != nil {
			break
		}
	}
	if err := filler.Truncate(n - 512<<10); err != nil {
		t.Fatal(err)
	}
	filler.Close()
	task, err := d.DeleteSnapshot("base")
	if err != nil {
		t.Fatalf("delete snapshot with room for its checkpoint: %v", err)
	}
	select {
	case <-task.Done():
		t.Fatalf("consolidation without room ended: %v", task.Err())
	case <-time.After(500 * time.Millisecond):
	}
	if err := d.failed(); err != nil {
		t.Fatalf("consolidation without room failed the disk: %v", err)
	}
	if _, err := d.WriteAt(pattern(50, chunk), 0); err != nil { // the disk still serves
		t.Fatalf("overwrite during a stalled consolidation: %v", err)
	}
	os.Remove(dir + "/filler")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := task.Wait(ctx); err != nil {
		t.Fatalf("consolidation after space was freed: %v", err)
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Stat(); st.Layers != 1 {
		t.Fatalf("%d layers after the consolidation", st.Layers)
	}
	buf := make([]byte, chunk)
	for i := range 6 {
		want := pattern(i, chunk)
		if i == 0 {
			want = pattern(50, chunk)
		}
		if _, err := d.ReadAt(buf, int64(i)*chunk); err != nil || !bytes.Equal(buf, want) {
			t.Fatalf("chunk %d after the consolidation: %v", i, err)
		}
	}
}

// TestNoSpaceCreate: creating a disk on a full datastore is ErrNoSpace
// and leaves nothing behind; it works once there is room.
func TestNoSpaceCreate(t *testing.T) {
	dir, resize := smallTmpfs(t, "1m")
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	filler, err := os.Create(dir + "/filler")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Close()
	if _, err := ds.Create("d", 1<<20, Options{}); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("create on a full datastore: %v, want ErrNoSpace", err)
	}
	if _, err := os.Stat(dir + "/d"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed create left its directory: %v", err)
	}
	resize("8m")
	d, err := ds.Create("d", 1<<20, Options{})
	if err != nil {
		t.Fatalf("create once there is room: %v", err)
	}
	d.Close()
}

package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// vaaiDisk is a disk of size on a tmpfs datastore, written with random
// data over its first half.
func vaaiDisk(t *testing.T, ds *Datastore, name string, size int64, opt Options) (*Disk, []byte) {
	t.Helper()
	d, err := ds.Create(name, size, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ref := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(ref[:size/2])
	if _, err := d.WriteAt(ref[:size/2], 0); err != nil {
		t.Fatal(err)
	}
	return d, ref
}

func readAll(t *testing.T, r interface {
	ReadAt([]byte, int64) (int, error)
}, size int64) []byte {
	t.Helper()
	p := make([]byte, size)
	if _, err := r.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

func allocated(t *testing.T, d *Disk) int64 {
	t.Helper()
	st, err := d.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Allocated
}

// TestWriteZeroesNoHole: WRITE_ZEROES with NO_HOLE keeps the range
// allocated and reads zeroes, without it the space goes back; in a chain
// both hide the snapshot's data below without touching it, NO_HOLE by
// allocated zero grains, the other by zero marks.
func TestWriteZeroesNoHole(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	d, ref := vaaiDisk(t, ds, "z", size, Options{})
	before := allocated(t, d)
	if err := d.WriteZeroes(0, 1<<20, true, true); err != nil {
		t.Fatal(err)
	}
	clear(ref[:1<<20])
	if got := allocated(t, d); got < before {
		t.Fatalf("NO_HOLE gave space back: %d < %d", got, before)
	}
	if err := d.WriteZeroes(1<<20, 1<<20, false, true); err != nil {
		t.Fatal(err)
	}
	clear(ref[1<<20 : 2<<20])
	if got := allocated(t, d); got > before-(1<<20)+4096 {
		t.Fatalf("zero without NO_HOLE kept its space: %d of %d", got, before)
	}
	if !bytes.Equal(readAll(t, d, size), ref) {
		t.Fatal("flat disk reads wrong after zeroing")
	}
	// In a chain: the snapshot keeps its data, the live disk reads zeroes.
	if _, err := d.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	copy(ref, bytes.Repeat([]byte{7}, 1<<20))
	snapRef := bytes.Clone(ref)
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	for i, noHole := range []bool{true, false} {
		off := int64(i) * (512 << 10)
		if err := d.WriteZeroes(off+512, 512<<10-1024, noHole, true); err != nil {
			t.Fatal(err)
		}
		clear(ref[off+512 : off+512<<10-512])
	}
	top := d.chain[len(d.chain)-1]
	if st := top.state(1); st != present {
		t.Fatalf("NO_HOLE grain in the delta is %d, want present", st)
	}
	if st := top.state(uint32((512<<10)/d.grain + 1)); st != zeroed {
		t.Fatalf("punching grain in the delta is %d, want zeroed", st)
	}
	if !bytes.Equal(readAll(t, d, size), ref) {
		t.Fatal("live disk reads wrong after zeroing over a snapshot")
	}
	s, err := d.OpenSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !bytes.Equal(readAll(t, s, size), snapRef) {
		t.Fatal("zeroing the live disk changed the snapshot")
	}
}

// TestFastZeroNotSupported: where the engine could only zero by writing
// zeroes (a file system without fallocate), FAST_ZERO fails with
// ErrNotSupported and changes nothing; without FAST_ZERO it zeroes.
func TestFastZeroNotSupported(t *testing.T) {
	ds, err := OpenDatastore("/ds", WithFS(vfstest.NewCrashFS()))
	if err != nil {
		t.Fatal(err)
	}
	d, ref := vaaiDisk(t, ds, "f", 1<<20, Options{})
	for _, noHole := range []bool{false, true} {
		if err := d.WriteZeroes(0, 64<<10, noHole, true); !errors.Is(err, ErrNotSupported) {
			t.Fatalf("fast zero (noHole %v) without fallocate: %v, want ErrNotSupported", noHole, err)
		}
	}
	if !bytes.Equal(readAll(t, d, 1<<20), ref) {
		t.Fatal("a refused fast zero changed data")
	}
	if err := d.WriteZeroes(0, 64<<10, true, false); err != nil {
		t.Fatal(err)
	}
	clear(ref[:64<<10])
	if !bytes.Equal(readAll(t, d, 1<<20), ref) {
		t.Fatal("slow zero did not zero")
	}
}

// TestProvision: lazy- and eager-zeroed disks hold their whole size from
// creation and keep it through TRIM and WRITE_ZEROES; thin ones hold
// nothing; reclaim refuses thick disks; an unknown mode is ErrInvalid.
func TestProvision(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	for _, p := range []Provision{ProvisionThin, ProvisionLazy, ProvisionEager} {
		d, err := ds.Create("p-"+string(p), size, Options{Provision: p})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := d.Stat()
		thick := p != ProvisionThin
		if st.Provision != p || (thick && st.Allocated < size) || (!thick && st.Allocated >= size/2) {
			t.Fatalf("%s: provision %s, allocated %d of %d", p, st.Provision, st.Allocated, int64(size))
		}
		if err := d.Trim(0, size); err != nil {
			t.Fatal(err)
		}
		if err := d.Zero(0, size/2, true); err != nil {
			t.Fatal(err)
		}
		if got := allocated(t, d); thick && got < size {
			t.Fatalf("%s: TRIM gave back reserved space: %d", p, got)
		}
		if _, err := d.Reclaim(0); thick != errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: reclaim: %v", p, err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d, err = ds.Open("p-" + string(p)) // the mode survives reopening
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := d.Stat(); st.Provision != p {
			t.Fatalf("reopened %s disk is %s", p, st.Provision)
		}
		if err := d.Grow(size * 2); err != nil {
			t.Fatal(err)
		}
		if got := allocated(t, d); thick && got < 2*size {
			t.Fatalf("%s: grown disk holds %d of %d", p, got, 2*size)
		}
		d.Close()
	}
	if _, err := ds.Create("bad", size, Options{Provision: "thick"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown provision: %v", err)
	}
}

// TestLinkedCloneKeepsLayersUntilLastUser: a linked clone shares its
// source snapshot's layer files (hard links, made in O(1)); deleting the
// source snapshot first gives the source its own copy (the clone keeps
// reading the old bytes), deleting the source disk leaves the clone
// whole, and writes to either never reach the other.
func TestLinkedCloneKeepsLayersUntilLastUser(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 20
	src, ref := vaaiDisk(t, ds, "src", size, Options{})
	if _, err := src.CreateSnapshot("s1", ""); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, _, err := ds.Clone(src, "s1", "c", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("linked clone in %v", time.Since(start))
	defer c.Close()
	if n := vfs.Links(src.chain[0].f); n != 2 {
		t.Fatalf("flat layer has %d links, want 2 (shared)", n)
	}
	if st, _ := c.Stat(); st.UUID == "" || st.Shared == 0 || st.Snapshots != nil {
		t.Fatalf("clone stat %+v", st)
	}
	// Writes after the clone, on both sides, stay on their side.
	if _, err := src.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	cref := bytes.Clone(ref)
	if _, err := c.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	copy(cref[8192:], bytes.Repeat([]byte{2}, 4096))
	copy(ref, bytes.Repeat([]byte{1}, 4096))
	// Consolidating s1 writes into the shared flat layer: the source
	// unshares it first.
	task, err := src.DeleteSnapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := vfs.Links(src.chain[0].f); n != 1 {
		t.Fatalf("source flat layer has %d links after unsharing", n)
	}
	if !bytes.Equal(readAll(t, src, size), ref) || !bytes.Equal(readAll(t, c, size), cref) {
		t.Fatal("a write or consolidation reached the other disk")
	}
	// The source's deletion keeps what the clone uses.
	if _, err := src.CreateSnapshot("s2", ""); err != nil {
		t.Fatal(err)
	}
	c2, _, err := ds.Clone(src, "s2", "c2", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	src.Close()
	if err := ds.Delete("src"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, c2, size), ref) {
		t.Fatal("clone changed when its source disk was deleted")
	}
	if err := c2.Check(); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if c2, err = ds.Open("c2"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, c2, size), ref) {
		t.Fatal("reopened clone of a deleted disk reads wrong")
	}
	c2.Close()
}

// TestCopyFromBadInput: out of range, misaligned, oversized, overlapping
// and cross-datastore copies fail with their sentinels and change
// nothing; an unknown source snapshot is ErrNotFound.
func TestCopyFromBadInput(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	d, ref := vaaiDisk(t, ds, "d", size, Options{})
	other, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	o, _ := vaaiDisk(t, other, "o", size, Options{})
	cases := []struct {
		name              string
		src               *Disk
		snap              string
		srcOff, dstOff, n int64
		want              error
	}{
		{"source out of range", d, "", size - 4096, 0, 8192, ErrOutOfRange},
		{"target out of range", d, "", 0, size - 4096, 8192, ErrOutOfRange},
		{"negative", d, "", -512, 0, 512, ErrOutOfRange},
		{"misaligned", d, "", 100, 8192, 512, ErrMisaligned},
		{"oversized", d, "", 0, 0, MaxCopySegment + 512, ErrTooLarge},
		{"overlapping live", d, "", 0, 4096, 8192, ErrInvalid},
		{"no such snapshot", d, "nope", 0, 0, 4096, ErrNotFound},
		{"another datastore", o, "", 0, 0, 4096, ErrNotSupported},
	}
	for _, c := range cases {
		if _, err := d.CopyFrom(c.src, c.snap, c.srcOff, c.dstOff, c.n); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if !bytes.Equal(readAll(t, d, size), ref) {
		t.Fatal("a refused copy changed data")
	}
}

// TestReclaim: reclaim gives back grains written with zeroes (flat and
// in the live delta), keeps the data, leaves frozen layers alone, and
// honours its rate.
func TestReclaim(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	d, ref := vaaiDisk(t, ds, "r", size, Options{})
	if _, err := d.WriteAt(make([]byte, size/2), size/2); err != nil { // literal zeroes
		t.Fatal(err)
	}
	before := allocated(t, d)
	const rate = 16 << 20
	start := time.Now()
	task, err := d.Reclaim(rate)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 8 MiB allocated examined at 16 MiB/s: 0.5 s (minus the first step).
	if el := time.Since(start); el < 400*time.Millisecond || el > 10*time.Second { // loose above: a loaded machine
		t.Errorf("reclaim of 8 MiB at 16 MiB/s took %v", el)
	}
	if got := allocated(t, d); got > before-size/2+64<<10 || task.Reclaimed() < size/2 {
		t.Fatalf("reclaim freed %d (allocated %d → %d)", task.Reclaimed(), before, got)
	}
	if !bytes.Equal(readAll(t, d, size), ref) {
		t.Fatal("reclaim changed data")
	}
	// In a chain: zeroes written over snapshot data become zero marks.
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	clear(ref[:1<<20])
	task, err = d.Reclaim(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if task.Reclaimed() != 1<<20 || !bytes.Equal(readAll(t, d, size), ref) {
		t.Fatalf("reclaim in a delta freed %d, or reads wrong", task.Reclaimed())
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestTrimSpaceBackAtConsolidation: data trimmed after a snapshot stays
// allocated in the frozen layer until the snapshot is deleted; the
// consolidation gives it back.
func TestTrimSpaceBackAtConsolidation(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	d, _ := vaaiDisk(t, ds, "t", size, Options{})
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(0, size); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, d); got < size/2 {
		t.Fatalf("trim touched the frozen layer: allocated %d", got)
	}
	task, err := d.DeleteSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, d); got > 64<<10 {
		t.Fatalf("after consolidation %d bytes still allocated", got)
	}
	if !bytes.Equal(readAll(t, d, size), make([]byte, size)) {
		t.Fatal("trimmed disk does not read zeroes")
	}
	if fi, err := os.Stat(filepath.Join(d.Path(), flatName)); err != nil || fi.Size() != size {
		t.Fatalf("flat layer after consolidation: %v %v", fi, err)
	}
}

// TestCopyFromPastLayerEnd: a source view longer than its bottom layer
// file (grown after a snapshot) copies the part past the file's end as
// zeroes into a delta target, and the grains copied are marked (a run
// order bug once left them unmarked, so the target read its older data).
func TestCopyFromPastLayerEnd(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	src, _ := vaaiDisk(t, ds, "src", 1<<20, Options{})
	if _, err := src.WriteAt(bytes.Repeat([]byte{3}, 512<<10), 512<<10); err != nil {
		t.Fatal(err)
	}
	srcData := readAll(t, src, 1<<20)
	if _, err := src.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	if err := src.Grow(2 << 20); err != nil {
		t.Fatal(err)
	}
	dst, _ := vaaiDisk(t, ds, "dst", 2<<20, Options{})
	if _, err := dst.WriteAt(bytes.Repeat([]byte{9}, 2<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CopyFrom(src, "", 512<<10, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{9}, 2<<20)
	copy(want, srcData[512<<10:])
	clear(want[512<<10 : 1<<20])
	if i := firstDiff(readAll(t, dst, 2<<20), want); i >= 0 {
		t.Fatalf("copy across the source layer's end differs at %d", i)
	}
}

// TestOffloadsConcurrent runs writes, zeroes, trims and copies in both
// directions between two disks (live and from snapshots) concurrently with
// reclaims, snapshots, consolidations and clones: nothing deadlocks, the
// race detector finds nothing, both disks pass Check, and each clone
// reads as its snapshot read when it was taken.
func TestOffloadsConcurrent(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	a, _ := vaaiDisk(t, ds, "a", size, Options{})
	b, _ := vaaiDisk(t, ds, "b", size, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	errc := make(chan error, 8)
	worker := func(seed int64, dst, src *Disk) {
		rng := rand.New(rand.NewSource(seed))
		for ctx.Err() == nil {
			off := rng.Int63n(size/4096-64) * 4096
			n := (rng.Int63n(63) + 1) * 512
			var err error
			switch rng.Intn(5) {
			case 0:
				_, err = dst.WriteAt(bytes.Repeat([]byte{byte(seed)}, int(n)), off)
			case 1:
				err = dst.WriteZeroes(off, n, rng.Intn(2) == 0, false)
			case 2:
				err = dst.Trim(off, n)
			default:
				snap := ""
				if ss := src.Snapshots(); len(ss) > 0 && rng.Intn(2) == 0 {
					snap = ss[rng.Intn(len(ss))].ID
				}
				_, err = dst.CopyFrom(src, snap, rng.Int63n(size/4096-64)*4096, off, n*8)
				if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
					err = nil // the snapshot went meanwhile; overlapping
				}
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}
	go worker(1, a, b)
	go worker(2, b, a)
	go worker(3, a, a)
	var clones []*Disk
	for i := 0; ctx.Err() == nil; i++ {
		d := []*Disk{a, b}[i%2]
		id := fmt.Sprintf("s%d", i)
		if _, err := d.CreateSnapshot(id, ""); errors.Is(err, ErrBusy) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		s, err := d.OpenSnapshot(id)
		if err != nil {
			t.Fatal(err)
		}
		want := readAll(t, s, size)
		s.Close()
		c, _, err := ds.Clone(d, id, fmt.Sprintf("c%d", i), i%3 != 0)
		if err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		if err == nil {
			s2, _ := d.OpenSnapshot(id)
			again := readAll(t, s2, size)
			s2.Close()
			if at := firstDiff(readAll(t, c, size), want); at >= 0 {
				t.Fatalf("clone (linked %v) of %s differs at %d (snapshot now differs at %d): layers %d, clone layers %d",
					i%3 != 0, id, at, firstDiff(again, want), len(d.chain), len(c.chain))
			}
			clones = append(clones, c)
		}
		if t, err := d.Reclaim(0); err == nil {
			t.Wait(ctx)
		}
		if _, err := d.DeleteSnapshot(id); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append([]*Disk{a, b}, clones...) {
		if t := d.Consolidation(); t != nil {
			t.Wait(context.Background())
		}
		if err := d.Check(); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
}

// TestReclaimRacesWrites: a write of data into a zero-filled grain that
// arrives while a reclaim step has read the grain and not yet punched it
// is not punched away: a flat disk's writes take no grain locks, so the
// step excludes them with the barrier (the write waits for the step).
func TestReclaimRacesWrites(t *testing.T) {
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("r", 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(make([]byte, 1<<20), 0); err != nil { // literal zeroes
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	wrote := make(chan error, 1)
	d.afterReclaimRead = func() {
		d.afterReclaimRead = nil
		go func() { _, err := d.WriteAt(data, 8192); wrote <- err }()
		time.Sleep(50 * time.Millisecond) // the write lands now, unless it waits
	}
	task, err := d.Reclaim(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	d.ReadAt(got, 8192)
	if !bytes.Equal(got, data) {
		t.Fatal("a write racing a reclaim step was punched away")
	}
}

// TestCloneLeftoversAndMetaVersion: a clone interrupted by a crash leaves
// only its build directory, which the next OpenDatastore removes (one
// another process still builds, its lock held, stays); a thin disk's
// disk.meta stays version 1 (older binaries open it), a thick one's is 2.
func TestCloneLeftoversAndMetaVersion(t *testing.T) {
	dir := fastTempDir(t)
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint16{"thin": 1, "lazy": 2} {
		p := map[string]Provision{"thin": ProvisionThin, "lazy": ProvisionLazy}[name]
		d, err := ds.Create(name, 1<<20, Options{Provision: p})
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		b, err := os.ReadFile(filepath.Join(dir, name, metaName))
		if err != nil {
			t.Fatal(err)
		}
		if v := uint16(b[8]) | uint16(b[9])<<8; v != want {
			t.Fatalf("%s disk.meta version %d, want %d", name, v, want)
		}
	}
	dead, live := filepath.Join(dir, cloneTmpPrefix+"dead"), filepath.Join(dir, cloneTmpPrefix+"live")
	for _, p := range []string{dead, live} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, flatName), []byte("x"), 0o600)
	}
	lock, err := vfs.Default.Lock(filepath.Join(live, lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := OpenDatastore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("interrupted clone's directory left behind: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a clone being built was removed: %v", err)
	}
	if names, _ := ds.List(); len(names) != 2 {
		t.Fatalf("datastore lists %v", names)
	}
}

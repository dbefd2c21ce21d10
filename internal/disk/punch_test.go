package disk

import (
	"bytes"
	"context"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// punchDisk is a 1 MiB disk whose base holds pattern 1 and whose live
// top, above snapshot "s", holds pattern 2 in its first n grains.
func punchDisk(t *testing.T, n int64) *Disk {
	t.Helper()
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("p", 1<<20, Options{DisableCBT: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.WriteAt(pattern(1, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(pattern(2, int(n*d.grain)), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReadRacesPunch: a read that resolved grains to the merging child,
// then found them moved to the parent and punched from the child's file
// before its pread, must return the data (from the parent), not the hole
// (invariant 13). The merge is driven by hand at that exact point; without
// the re-check after the read the test reads zeroes.
func TestReadRacesPunch(t *testing.T) {
	const n = 16
	d := punchDisk(t, n)
	d.barrier.Lock() // the in-memory state of a merge, without its task
	ms := &mergeState{child: d.chain[1], parent: d.chain[0], live: true, total: n}
	d.merge = ms
	d.barrier.Unlock()
	var once sync.Once
	moved := false
	d.beforeLayerRead = func() {
		once.Do(func() {
			if k, err := d.mergeStep(); err != nil || k != n {
				t.Errorf("merge step: %d grains, %v", k, err)
			}
			if err := d.Flush(); err != nil { // the drop is durable: punchable
				t.Error(err)
			}
			ms.child.punching.Store(true)
			if err := vfs.PunchHole(ms.child.f, 0, n*d.grain); err != nil {
				t.Error(err)
			}
			moved = true
		})
	}
	got := make([]byte, n*d.grain)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !moved {
		t.Fatal("the read never resolved to the child")
	}
	hole := make([]byte, len(got))
	if _, err := ms.child.f.ReadAt(hole, 0); err != nil || !bytes.Equal(hole, make([]byte, len(got))) {
		t.Fatalf("the child's grains were not punched (%v): the test shows nothing", err)
	}
	if !bytes.Equal(got, pattern(2, len(got))) {
		t.Fatalf("read during the punch returned %x..., want %x...", got[:4], pattern(2, 4))
	}
	d.barrier.Lock()
	d.merge = nil // the child is empty: the chain reads the same without a merge
	d.barrier.Unlock()
}

// TestConsolidatePunchRaces merges a 4 MiB delta while writers and readers
// race it, each writer in its own 64 KiB stripes (read back after each
// write), readers in stripes nobody writes (must read as before the merge),
// and checks that the child's file gave space back while the merge ran,
// not only at its end: the first batch is punched before the merge goes
// on.
func TestConsolidatePunchRaces(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run("", func(t *testing.T) { consolidatePunchRace(t, seed) })
	}
}

func consolidatePunchRace(t *testing.T, seed int64) {
	const size, stripe, writers = 8 << 20, 64 << 10, 3
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	d, err := ds.Create("p", size, Options{Grain: []int64{512, 4096, 16384}[rng.Intn(3)]})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ref := make([]byte, size)
	rng.Read(ref)
	if _, err := d.WriteAt(ref, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	for range 256 { // half the delta's grains, in 16 KiB writes
		off := rng.Int63n(size/(16<<10)) * (16 << 10)
		rng.Read(ref[off : off+16<<10])
		if _, err := d.WriteAt(ref[off:off+16<<10], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	child := d.chain[1]
	before := fileAllocated(t, child.f)
	var once sync.Once
	d.afterHandOff = func() {
		once.Do(func() { waitPunched(t, child, before) })
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raceStripes(t, d, ref, stop, seed*10+int64(w), w, writers+1, stripe, w < writers)
		}()
	}
	task, err := d.DeleteSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatal("the disk after the merge differs from the model")
	}
}

// waitPunched waits until the child's file holds fewer blocks than before.
func waitPunched(t *testing.T, l *layer, before int64) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if fileAllocated(t, l.f) < before {
			return
		}
	}
	t.Errorf("the child's file still holds %d blocks of %d after a batch was handed off", fileAllocated(t, l.f), before)
}

// raceStripes writes (if write) or reads the stripes k, k+n, k+2n, ... of
// the disk at random until stop, checking each read against ref, which it
// updates for its own writes (no one else touches its stripes).
func raceStripes(t *testing.T, d *Disk, ref []byte, stop chan struct{}, seed int64, k, n, stripe int, write bool) {
	rng := rand.New(rand.NewSource(seed))
	buf := make([]byte, 8<<10)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		s := (rng.Intn(len(ref)/stripe/n)*n + k) * stripe
		off := s + rng.Intn(stripe/len(buf))*len(buf)
		if write {
			rng.Read(buf)
			if _, err := d.WriteAt(buf, int64(off)); err != nil {
				t.Error(err)
				return
			}
			copy(ref[off:], buf)
		}
		if _, err := d.ReadAt(buf, int64(off)); err != nil {
			t.Error(err)
			return
		}
		if !bytes.Equal(buf, ref[off:off+len(buf)]) {
			t.Errorf("stripe %d: read at %d differs from the model", k, off)
			return
		}
		if i%16 == 0 && write {
			if err := d.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	}
}

// TestPowerCutDuringPunch cuts the power (a torn cut: unsynced pages
// survive or not) at every file-system call of a consolidation whose
// child is punched as it goes, and checks that the reopened disk reads
// every flushed byte, before and after its merge resumes. A punch that ran
// ahead of the flush recording its grains' move fails it: the punched
// zeroes survive a cut that loses the record, and the child's map then
// still names them (invariant 13).
func TestPowerCutDuringPunch(t *testing.T) {
	punched := 0
	for k := 0; k < 1000; k++ {
		cfs, d := crashDiskWithSnapshot(t)
		ref := make([]byte, 1<<20)
		rand.New(rand.NewSource(1)).Read(ref[:256<<10])
		if _, err := d.WriteAt(ref[:256<<10], 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(); err != nil {
			t.Fatal(err)
		}
		child := d.chain[1]
		cfs.CutAfter(k, int64(k))
		if task, err := d.DeleteSnapshot("s"); err == nil {
			task.Wait(context.Background())
		}
		d.Close()
		after := cfs.Crashed()
		if after == nil { // the merge ended before the k-th call
			break
		}
		if child.punching.Load() {
			punched++
		}
		checkImageAfterCut(t, after, ref, k)
	}
	if punched == 0 {
		t.Fatal("no cut landed after the first punch: the test shows nothing")
	}
	t.Logf("%d cuts after the first punch", punched)
}

// checkImageAfterCut reopens disk c after a cut and compares its image
// with ref while its merge resumes and after.
func checkImageAfterCut(t *testing.T, fsys *vfstest.CrashFS, ref []byte, k int) {
	t.Helper()
	ds, err := OpenDatastore("/ds", WithFS(fsys), WithBootID(fsys.BootID()))
	if err != nil {
		t.Fatalf("cut %d: %v", k, err)
	}
	d, err := ds.Open("c")
	if err != nil {
		t.Fatalf("cut %d: %v", k, err)
	}
	defer d.Close()
	got := make([]byte, len(ref))
	for pass := range 2 {
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatalf("cut %d: %v", k, err)
		}
		if i := firstDiff(got, ref); i >= 0 {
			t.Fatalf("cut %d (pass %d): byte %d is %#x, flushed %#x", k, pass, i, got[i], ref[i])
		}
		if task := d.Consolidation(); task != nil {
			if err := task.Wait(context.Background()); err != nil {
				t.Fatalf("cut %d: resumed merge: %v", k, err)
			}
		}
	}
	if err := d.Check(); err != nil {
		t.Fatalf("cut %d: %v", k, err)
	}
}

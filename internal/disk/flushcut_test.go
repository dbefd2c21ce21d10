package disk

import (
	"bytes"
	"io/fs"
	"math/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// gateFS is a CrashFS on which reads of one file (once armed) wait for a
// token, so a test can hold a consolidation in the middle of a step.
type gateFS struct {
	*vfstest.CrashFS
	name   atomic.Value // the gated file's name
	armed  atomic.Bool
	tokens chan struct{}
	dead   chan struct{} // closed after the crash: gated reads go on (and fail)
}

type gateFile struct {
	vfs.File
	g *gateFS
}

func (g *gateFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := g.CrashFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

func (f gateFile) ReadAt(p []byte, off int64) (int, error) {
	if f.g.armed.Load() && f.Name() == f.g.name.Load() {
		select {
		case <-f.g.tokens:
		case <-f.g.dead:
		}
	}
	return f.File.ReadAt(p, off)
}

// TestCrashFlushCutsMerge: a flush that runs while a consolidation moves a
// grain from the child to the parent (a delta) must not make the child's
// drop durable without the parent's gain. It lets one consolidation step
// run between the flush's take of the parent's record and its take of
// the child's, cuts the power, and checks the flushed data. (Found by
// TestCrashPowerLoss in long mode: "lost an acknowledged, flushed write".)
func TestCrashFlushCutsMerge(t *testing.T) {
	const grain = DefaultGrain
	gfs := &gateFS{CrashFS: vfstest.NewCrashFS(), tokens: make(chan struct{}, 1), dead: make(chan struct{})}
	ds, err := OpenDatastore("/ds", WithFS(gfs), WithBootID(gfs.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", 1<<20, Options{DisableCBT: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "s2"} { // chain: flat, s2's layer, top
		if _, err := d.CreateSnapshot(id, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Two grains in the top layer, further apart than one merge step, so
	// the second step waits at the gate until the power is cut.
	data := make([]byte, grain)
	rand.New(rand.NewSource(1)).Read(data)
	offs := []int64{0, 2 * maxMergeRun * grain}
	for _, off := range offs {
		if _, err := d.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	parent, child := d.chain[1], d.chain[2]
	gfs.name.Store(child.f.Name())
	gfs.armed.Store(true)
	task, err := d.DeleteSnapshot("s2") // merges the top into s2's layer
	if err != nil {
		t.Fatal(err)
	}
	d.afterTake = func(l *layer) {
		if l != parent {
			return
		}
		gfs.tokens <- struct{}{} // one step may run now, if it can
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if n, _ := task.Progress(); n > 0 {
				return
			}
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.afterTake = nil
	after := gfs.CrashFS.Crash()
	close(gfs.dead)
	d.Close()

	ds, err = OpenDatastore("/ds", WithFS(after), WithBootID(after.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err = ds.Open("c")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, grain)
	for _, off := range offs {
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("grain at %d lost a flushed write after a power loss during consolidation", off)
		}
	}
}

package disk

import (
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// syncGateFS is a CrashFS on which, once armed, the Sync of the flat
// layer's file waits until released: a flush held in its data sync.
type syncGateFS struct {
	*vfstest.CrashFS
	armed   atomic.Bool
	entered chan struct{} // one token per gated sync that began
	release chan struct{} // closed: gated syncs go on
}

type syncGateFile struct {
	vfs.File
	g *syncGateFS
}

func (g *syncGateFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := g.CrashFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return syncGateFile{f, g}, nil
}

func (f syncGateFile) Sync() error {
	if f.g.armed.Load() && filepath.Base(f.Name()) == flatName {
		f.g.entered <- struct{}{}
		<-f.g.release
	}
	return f.File.Sync()
}

// TestExclusiveWaitsOutFlush: an exclusive section (a snapshot's freeze,
// a checkpoint) asked for while a flush is in its data sync must not hold
// the guest's writes until that sync ends (lockExclusive, docs/format.md
// invariant 6). Go's RWMutex admits no new reader once a writer waits, so
// asking for the barrier right away queues every write behind the sync.
func TestExclusiveWaitsOutFlush(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(d *Disk) error
	}{
		{"snapshot", func(d *Disk) error { _, err := d.CreateSnapshot("s", ""); return err }},
		{"checkpoint", func(d *Disk) error { return d.Checkpoint() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &syncGateFS{CrashFS: vfstest.NewCrashFS(), entered: make(chan struct{}, 8), release: make(chan struct{})}
			ds, err := OpenDatastore("/ds", WithFS(g), WithBootID(g.BootID()))
			if err != nil {
				t.Fatal(err)
			}
			d, err := ds.Create("c", 1<<20, Options{DisableCBT: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			p := pattern(1, DefaultGrain)
			if _, err := d.WriteAt(p, 0); err != nil {
				t.Fatal(err)
			}
			g.armed.Store(true)
			flushed := make(chan error, 1)
			go func() { flushed <- d.Flush() }()
			<-g.entered // the flush syncs, holding the shared barrier
			opDone := make(chan error, 1)
			go func() { opDone <- tc.op(d) }()
			time.Sleep(50 * time.Millisecond) // let it ask for the barrier
			wrote := make(chan error, 1)
			go func() { _, err := d.WriteAt(p, DefaultGrain); wrote <- err }()
			select {
			case err := <-wrote:
				if err != nil {
					t.Error(err)
				}
			case <-time.After(2 * time.Second):
				t.Error("a write waited for a flush's data sync behind an exclusive section")
			}
			g.armed.Store(false)
			close(g.release)
			if err := <-flushed; err != nil {
				t.Fatal(err)
			}
			if err := <-opDone; err != nil {
				t.Fatal(err)
			}
			if tc.name == "snapshot" && len(d.Snapshots()) != 1 {
				t.Fatalf("snapshots %v", d.Snapshots())
			}
		})
	}
}

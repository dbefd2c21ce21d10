package disk

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// TestCrashFinishMergeSteps pins the order of a consolidation's start
// (DeleteSnapshot) and end (finishMerge, invariant 6): a power cut after
// each of their steps, with a
// write flushed after every earlier step, must lose no flushed write, and
// once the step that syncs the drop record is done the merge is over for
// good (the reopened disk has one layer and no merge to resume), even
// though disk.meta still names the child until the next checkpoint.
func TestCrashFinishMergeSteps(t *testing.T) {
	const grain = DefaultGrain
	tests := []struct {
		name   string
		cut    int   // the step after which the power goes (4: after the task)
		writes []int // the steps after which a write is flushed
		ended  bool  // the merge must be over at reopen
	}{
		{"after the start's disk.meta", 0, nil, false},
		{"after flush", 1, nil, false},
		{"after drop in memory", 2, []int{1}, false},
		// No flush of the test's own to make up for a missing one.
		{"after drop record sync", 3, nil, true},
		{"after drop record sync, flushes between", 3, []int{1, 2}, true},
		{"after the child is emptied", 4, []int{1, 2, 3}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfs, d := crashDiskWithSnapshot(t)
			want := map[int64][]byte{0: pattern(1, grain), 3 * grain: pattern(2, grain)}
			for off, p := range want {
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			var after *vfstest.CrashFS
			d.afterMergeStep = func(step int) {
				switch {
				case after != nil: // crashed: nothing is acknowledged
					return
				case step == tc.cut:
					after = cfs.Crash()
					return
				case !slices.Contains(tc.writes, step):
					return
				}
				// A guest write flushed between the steps: into the
				// parent once the child is dropped, so it tests the
				// records that follow the drop.
				off, p := int64(step)*8*grain, pattern(10+step, 4096)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Errorf("write after step %d: %v", step, err)
				}
				if err := d.Flush(); err != nil {
					t.Errorf("flush after step %d: %v", step, err)
				}
				want[off] = p
			}
			task, err := d.DeleteSnapshot("s")
			if err != nil {
				t.Fatal(err)
			}
			task.Wait(context.Background())
			if after == nil {
				after = cfs.Crash()
			}
			d.Close()
			checkFinishCut(t, after, want, tc.ended)
			if tc.cut == 0 { // the snapshot is gone once disk.meta says so
				checkSnapshots(t, after, 0)
			}
		})
	}
}

// checkFinishCut reopens the disk after the power cut and checks the
// flushed data and whether a merge is left to resume.
func checkFinishCut(t *testing.T, after *vfstest.CrashFS, want map[int64][]byte, ended bool) {
	t.Helper()
	ds, err := OpenDatastore("/ds", WithFS(after), WithBootID(after.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Open("c")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if task := d.Consolidation(); task != nil {
		if ended {
			t.Fatal("the merge resumes after its drop record was synced")
		}
		if err := task.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	if n := len(d.chain); n != 1 {
		t.Fatalf("%d layers after the merge, want 1", n)
	}
	for off, p := range want {
		got := make([]byte, len(p))
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("flushed write at %d lost by a power cut at the end of a consolidation", off)
		}
	}
}

// TestDirectAfterMerge: once a consolidation that moved a snapshot to the
// parent has ended, a direct reader opens that snapshot at once and reads
// what the disk's own view reads: disk.meta no longer records the merge
// (finishMerge's step 4), although the end itself is a journal record.
func TestDirectAfterMerge(t *testing.T) {
	ds, d, rng := directFixture(t)
	scribble(t, d, rng, 50)
	if _, err := d.CreateSnapshot("a", ""); err != nil {
		t.Fatal(err)
	}
	scribble(t, d, rng, 50)
	if _, err := d.CreateSnapshot("b", ""); err != nil {
		t.Fatal(err)
	}
	scribble(t, d, rng, 50)
	task, err := d.DeleteSnapshot("a") // b's layer merges into a's
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := OpenSnapshotDirect(ds.Dir(), "vm", "b")
	if err != nil {
		t.Fatalf("direct open right after the merge ended: %v", err)
	}
	defer r.Close()
	v, err := d.OpenSnapshot("b")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want, got := make([]byte, v.Size()), make([]byte, v.Size())
	if _, err := v.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("direct reader and the disk's view differ after the merge")
	}
}

// checkSnapshots: the disk after the power cut has n snapshots.
func checkSnapshots(t *testing.T, after *vfstest.CrashFS, n int) {
	t.Helper()
	ds, err := OpenDatastore("/ds", WithFS(after), WithBootID(after.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Open("c")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := len(d.Snapshots()); got != n {
		t.Fatalf("%d snapshots after the power cut, want %d", got, n)
	}
}

// TestDeleteStartRaces: between the commit of disk.meta that starts a
// consolidation and the switch of the in-memory state, a checkpoint
// (which commits the old snapshot list again) or a view of the snapshot
// (which must keep it) may slip in. The first must still delete it, the
// second must refuse and leave it, durably: a power cut after each.
func TestDeleteStartRaces(t *testing.T) {
	tests := []struct {
		name string
		race func(d *Disk) error
		busy bool
	}{
		{"checkpoint", func(d *Disk) error { return d.Checkpoint() }, false},
		{"view", func(d *Disk) error { _, err := d.OpenSnapshot("s"); return err }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfs, d := crashDiskWithSnapshot(t)
			p := pattern(7, DefaultGrain)
			if _, err := d.WriteAt(p, 0); err != nil {
				t.Fatal(err)
			}
			d.afterMergeStep = func(step int) {
				if step == 0 {
					if err := tc.race(d); err != nil {
						t.Error(err)
					}
				}
			}
			task, err := d.DeleteSnapshot("s")
			if tc.busy != errors.Is(err, ErrBusy) {
				t.Fatalf("delete with a %s in between: %v", tc.name, err)
			}
			if task != nil {
				if err := task.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			after := cfs.Crash()
			d.Close()
			want := map[int64][]byte{0: p}
			if tc.busy {
				checkSnapshots(t, after, 1)
				return
			}
			checkFinishCut(t, after, want, true)
			checkSnapshots(t, after, 0)
		})
	}
}

// TestFinishMergeRacesGrow: a grow between the end's flush (which makes
// the flat parent span the disk) and its switch must not leave the flat
// layer short of the disk: the grown area's data must read back, live
// and after a power cut. (Found by TestModelCAW: "live disk differs".)
func TestFinishMergeRacesGrow(t *testing.T) {
	cfs := vfstest.NewCrashFS()
	ds, err := OpenDatastore("/ds", WithFS(cfs), WithBootID(cfs.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	want := map[int64][]byte{0: pattern(3, DefaultGrain)}
	if _, err := d.WriteAt(want[0], 0); err != nil {
		t.Fatal(err)
	}
	grown := false
	d.afterMergeStep = func(step int) {
		if step != 1 || grown {
			return
		}
		grown = true
		if err := d.Grow(2 << 20); err != nil {
			t.Error(err)
		}
	}
	task, err := d.DeleteSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	want[3<<19] = pattern(4, 4096) // in the grown area, once the child is gone
	if _, err := d.WriteAt(want[3<<19], 3<<19); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi, err := d.chain[0].f.Stat(); err != nil || fi.Size() != 2<<20 {
		t.Fatalf("flat layer after the merge: %v, %v; want 2 MiB", fi.Size(), err)
	}
	after := cfs.Crash()
	d.Close()
	checkFinishCut(t, after, want, true)
}

// crashDiskWithSnapshot makes a 1 MiB disk "c" with one snapshot "s" in
// a datastore on a fresh CrashFS.
func crashDiskWithSnapshot(t *testing.T) (*vfstest.CrashFS, *Disk) {
	t.Helper()
	cfs := vfstest.NewCrashFS()
	ds, err := OpenDatastore("/ds", WithFS(cfs), WithBootID(cfs.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	return cfs, d
}

package disk

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// TestCrashSnapshotSteps pins the order of a snapshot's steps
// (snapfast.go, invariant 5): a power cut after each of them must lose
// no flushed write, leave a disk that passes Check, hold the snapshot
// (with the image it froze) once CreateSnapshot returned and not before
// its disk.meta is durable, and report as changed every write whose data
// survived, also the writes that went on while the snapshot committed.
func TestCrashSnapshotSteps(t *testing.T) {
	const grain = DefaultGrain
	tests := []struct {
		name   string
		cut    int   // the step after which the power goes (4: after it returned)
		writes []int // the steps after which the guest writes
		clean  bool  // the top map is clean at the prepare: no room made for it
		fast   bool  // the snapshot is taken the fast way (step 1 is reached)
	}{
		{"after the prepare", 0, nil, false, true},
		{"after the freeze", 1, []int{0, 1}, false, true},
		{"after the files", 2, []int{0, 1, 2}, false, true},
		{"after the rename", 3, []int{1, 2, 3}, false, true},
		{"after it returned", 4, []int{0, 1, 2, 3}, false, true},
		// No write after the freeze syncs the new journal for the commit.
		{"after it returned, no write after the freeze", 4, []int{0}, false, true},
		{"map dirtied after the prepare, after it returned", 4, []int{0}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfs, d := crashDiskWithSnapshot(t)
			base := d.Snapshots()[0].ChangeID
			flushed := map[int64][]byte{0: pattern(1, grain)} // acknowledged durable
			if _, err := d.WriteAt(flushed[0], 0); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if tc.clean {
				if err := d.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			frozen := map[int64][]byte{0: flushed[0]} // the image the snapshot holds
			later := map[int64][]byte{}               // the writes after the freeze
			var after *vfstest.CrashFS
			var steps []int
			var racer flushRacer
			d.afterSnapStep = func(step int) {
				steps = append(steps, step)
				if after != nil {
					return
				}
				if slices.Contains(tc.writes, step) {
					snapStepWrite(t, d, step, flushed, frozen, later)
				}
				if step == 1 && tc.cut >= 2 && slices.Contains(tc.writes, 1) {
					racer.start(d, 30*grain)
				}
				if step == tc.cut {
					after = cfs.Crash()
				}
			}
			if _, err := d.CreateSnapshot("t", ""); err != nil && after == nil {
				t.Fatal(err)
			}
			if slices.Contains(steps, 1) != tc.fast {
				t.Fatalf("steps %v: fast way %v, want %v", steps, !tc.fast, tc.fast)
			}
			if after == nil {
				after = cfs.Crash()
			}
			racer.join(flushed, later)
			d.Close()
			checkSnapCut(t, after, base, tc.cut, flushed, frozen, later)
		})
	}
}

// flushRacer writes and flushes while a snapshot commits. The flush
// must wait for the commit (waitCommit): acknowledged before it, its
// records would be in a journal that a power cut before the rename of
// disk.meta makes void. It is given 50 ms to return early.
type flushRacer struct {
	off      int64
	p        []byte
	done     chan error
	finished bool  // returned early
	err      error // its result, if finished
}

func (r *flushRacer) start(d *Disk, off int64) {
	r.off, r.p, r.done = off, pattern(40, DefaultGrain), make(chan error, 1)
	go func() {
		if _, err := d.WriteAt(r.p, off); err != nil {
			r.done <- err
			return
		}
		r.done <- d.Flush()
	}()
	select {
	case r.err = <-r.done:
		r.finished = true
	case <-time.After(50 * time.Millisecond):
	}
}

// join waits for the flush and records what it acknowledged: a flush
// that returned early counts as acknowledged then, so the power cut that
// follows must keep its write.
func (r *flushRacer) join(flushed, later map[int64][]byte) {
	if r.p == nil {
		return
	}
	if !r.finished {
		r.err = <-r.done
	}
	later[r.off] = r.p
	if r.err == nil {
		flushed[r.off] = r.p
	}
}

// snapStepWrite is a guest write after a snapshot's step: before the
// freeze it is flushed and belongs to the snapshot; after it, it goes to
// the new delta while the commit is in progress, and no flush could be
// acknowledged before the commit (a flush would wait for it here).
func snapStepWrite(t *testing.T, d *Disk, step int, flushed, frozen, later map[int64][]byte) {
	off, p := int64(1+step)*DefaultGrain, pattern(10+step, DefaultGrain)
	if _, err := d.WriteAt(p, off); err != nil {
		t.Errorf("write after step %d: %v", step, err)
	}
	if step != 0 {
		later[off] = p
		return
	}
	frozen[off], flushed[off] = p, p
	if err := d.Flush(); err != nil {
		t.Errorf("flush after step 0: %v", err)
	}
	// Not flushed, but written before the freeze: the snapshot's commit
	// makes it durable with the snapshot.
	off, p = 20*DefaultGrain, pattern(20, DefaultGrain)
	if _, err := d.WriteAt(p, off); err != nil {
		t.Errorf("write after step 0: %v", err)
	}
	frozen[off] = p
}

// checkSnapCut reopens the disk after the power cut and checks it.
func checkSnapCut(t *testing.T, after *vfstest.CrashFS, base string, cut int, flushed, frozen, later map[int64][]byte) {
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
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	for off, p := range flushed {
		if !bytes.Equal(readAt(t, d, off, len(p)), p) {
			t.Fatalf("flushed write at %d lost by a power cut after snapshot step %d", off, cut)
		}
	}
	snaps := d.Snapshots()
	switch {
	case cut <= 2 && len(snaps) != 1, cut == 4 && len(snaps) != 2:
		t.Fatalf("%d snapshots after a power cut after step %d", len(snaps), cut)
	}
	since := base
	if len(snaps) == 2 {
		since = snaps[1].ChangeID
		checkFrozen(t, d, frozen)
	}
	checkSnapCBT(t, d, base, since, flushed, later)
}

// checkFrozen: the snapshot holds what was written before it.
func checkFrozen(t *testing.T, d *Disk, frozen map[int64][]byte) {
	t.Helper()
	s, err := d.OpenSnapshot("t")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for off, p := range frozen {
		got := make([]byte, len(p))
		if _, err := s.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("snapshot lost the write at %d", off)
		}
	}
}

// checkSnapCBT: a snapshot taken now reports as changed since base
// every flushed write, and since the last surviving snapshot every later
// write whose data reads back.
func checkSnapCBT(t *testing.T, d *Disk, base, since string, flushed, later map[int64][]byte) {
	t.Helper()
	if _, err := d.CreateSnapshot("check", ""); err != nil {
		t.Fatal(err)
	}
	v, err := d.OpenSnapshot("check")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	unit := int64(d.tracker.Config().Granularity)
	for _, q := range []struct {
		id   string
		want map[int64][]byte
	}{{base, flushed}, {since, later}} {
		ca, err := v.ChangedAreas(0, q.id)
		if err != nil {
			t.Fatal(err)
		}
		got := areaSet(ca, unit)
		for off, p := range q.want {
			if bytes.Equal(readAt(t, d, off, len(p)), p) && !got[off/unit*unit] {
				t.Fatalf("CBT lost the write at %d since %s", off, q.id)
			}
		}
	}
}

func readAt(t *testing.T, d *Disk, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := d.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

package disk

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"testing"
)

func directFixture(t *testing.T) (*Datastore, *Disk, *rand.Rand) {
	t.Helper()
	ds, err := OpenDatastore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("vm", 4<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return ds, d, rand.New(rand.NewSource(1))
}

// snapshotStack takes n snapshots, each after scribbling, and returns
// their IDs, oldest first: a chain of a flat layer and n-1 deltas.
func snapshotStack(t *testing.T, d *Disk, rng *rand.Rand, n int) []string {
	t.Helper()
	var snaps []string
	for range n {
		scribble(t, d, rng, 60)
		si, err := d.CreateSnapshot("", "")
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, si.ID)
	}
	return snaps
}

func scribble(t *testing.T, d *Disk, rng *rand.Rand, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		p := make([]byte, Sector*(1+rng.Intn(40)))
		rng.Read(p)
		off := Sector * rng.Int63n((d.Size()-int64(len(p)))/Sector)
		var err error
		switch rng.Intn(4) {
		case 0:
			err = d.Zero(off, int64(len(p)), true)
		default:
			_, err = d.WriteAt(p, off)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirectReadsEqualEngine: random reads of every snapshot of a chain,
// direct and through the engine, agree while the disk keeps writing.
func TestDirectReadsEqualEngine(t *testing.T) {
	ds, d, rng := directFixture(t)
	snaps := snapshotStack(t, d, rng, 3)
	scribble(t, d, rng, 60) // live writes above the snapshots
	for _, id := range snaps {
		ds2, err := OpenSnapshotDirect(ds.Dir(), "vm", id)
		if err != nil {
			t.Fatal(err)
		}
		s, err := d.OpenSnapshot(id)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			n := Sector * (1 + rng.Int63n(64))
			off := Sector * rng.Int63n((ds2.Size()-n)/Sector)
			a, b := make([]byte, n), make([]byte, n)
			if _, err := ds2.ReadAt(a, off); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("snapshot %s: read %d+%d differs", id, off, n)
			}
			if i == 100 {
				scribble(t, d, rng, 10)
			}
		}
		s.Close()
		ds2.Close()
	}
}

// TestDirectDetectsConsolidation: deleting the snapshot below merges into
// the reader's chain; the reader fails with ErrLayerChanged, and a new
// open during the merge is refused the same way.
func TestDirectDetectsConsolidation(t *testing.T) {
	ds, d, rng := directFixture(t)
	scribble(t, d, rng, 50)
	if _, err := d.CreateSnapshot("a", ""); err != nil {
		t.Fatal(err)
	}
	scribble(t, d, rng, 50)
	if _, err := d.CreateSnapshot("b", ""); err != nil {
		t.Fatal(err)
	}
	r, err := OpenSnapshotDirect(ds.Dir(), "vm", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	task, err := d.DeleteSnapshot("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(buf, 0); !errors.Is(err, ErrLayerChanged) {
		t.Fatalf("read during/after consolidation: %v", err)
	}
	task.Wait(context.Background())
	if _, err := r.ReadAt(buf, 0); !errors.Is(err, ErrLayerChanged) {
		t.Fatalf("read after consolidation: %v", err)
	}
}

// TestDirectRefusesMergeInChain: disk.meta recording a merge into the
// snapshot's chain is refused at open.
func TestDirectRefusesMergeInChain(t *testing.T) {
	m := &diskMeta{Layers: []layerMeta{{ID: 0}, {ID: 1}, {ID: 2}},
		Snapshots: []snapMeta{{ID: "b", Layer: 1}}, Merge: &mergeMeta{Snapshot: "a", Child: 1, Parent: 0}}
	if _, _, err := snapshotChain(m, "b"); !errors.Is(err, ErrLayerChanged) {
		t.Fatal(err)
	}
	m.Merge = &mergeMeta{Snapshot: "c", Child: 2, Parent: 1}
	if _, _, err := snapshotChain(m, "b"); !errors.Is(err, ErrLayerChanged) {
		t.Fatal(err)
	}
	m.Snapshots[0].Layer = 0
	m.Merge = &mergeMeta{Snapshot: "c", Child: 2, Parent: 1}
	if _, _, err := snapshotChain(m, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := DatastoreID(os.TempDir() + "/nonexistent-bw"); err == nil {
		t.Fatal("DatastoreID of a missing directory")
	}
}

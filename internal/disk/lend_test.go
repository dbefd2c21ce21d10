package disk

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestLendEqualsRead: every range Lend lends holds what ReadAt reads, on
// a flat chain and on one with deltas; ranges spanning layers or holding
// zero grains are not lent, and some ranges of each kind occur.
func TestLendEqualsRead(t *testing.T) {
	ds, d, rng := directFixture(t)
	for _, id := range snapshotStack(t, d, rng, 3) {
		s, err := OpenSnapshotDirect(ds.Dir(), "vm", id)
		if err != nil {
			t.Fatal(err)
		}
		lent, refused := 0, 0
		for i := 0; i < 300; i++ {
			n := Sector * (1 + rng.Int63n(64))
			off := Sector * rng.Int63n((s.Size()-n)/Sector)
			m, err := s.Lend(off, n)
			if err != nil {
				t.Fatal(err)
			}
			if m == nil {
				refused++
				continue
			}
			lent++
			want := make([]byte, n)
			if _, err := s.ReadAt(want, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Bytes, want) {
				t.Fatalf("snapshot %s: lent %d+%d differs from its read", id, off, n)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if lent == 0 || (refused == 0 && len(s.chain) > 1) {
			t.Fatalf("snapshot %s (%d layers): %d lent, %d refused", id, len(s.chain), lent, refused)
		}
		s.Close()
	}
}

// TestLendDetectsConsolidation: bytes lent before a consolidation merged
// into the snapshot's chain fail the Check a caller makes after use.
func TestLendDetectsConsolidation(t *testing.T) {
	ds, d, rng := directFixture(t)
	scribble(t, d, rng, 50)
	if _, err := d.CreateSnapshot("a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateSnapshot("b", ""); err != nil { // b's top layer is empty: lends come from a's
		t.Fatal(err)
	}
	r, err := OpenSnapshotDirect(ds.Dir(), "vm", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := r.Lend(0, 64<<10)
	if err != nil || m == nil {
		t.Fatalf("lend: %v %v", m, err)
	}
	defer m.Close()
	task, err := d.DeleteSnapshot("a")
	if err != nil {
		t.Fatal(err)
	}
	task.Wait(context.Background())
	if err := r.Check(); !errors.Is(err, ErrLayerChanged) {
		t.Fatalf("check after a consolidation under a lend: %v", err)
	}
}

func TestLendBadRange(t *testing.T) {
	ds, d, _ := directFixture(t)
	si, err := d.CreateSnapshot("", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSnapshotDirect(ds.Dir(), "vm", si.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		off, n int64
		want   error
	}{{-Sector, Sector, ErrOutOfRange}, {s.Size(), Sector, ErrOutOfRange}, {1, Sector, ErrMisaligned}} {
		if _, err := s.Lend(c.off, c.n); !errors.Is(err, c.want) {
			t.Errorf("lend %d+%d: %v, want %v", c.off, c.n, err, c.want)
		}
	}
	if m, err := s.Lend(0, 0); m != nil || err != nil {
		t.Errorf("lend of nothing: %v %v", m, err)
	}
}

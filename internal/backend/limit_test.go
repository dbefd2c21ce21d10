package backend_test

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

func TestConformanceLimit(t *testing.T) {
	backendtest.RunTests(t, func(*testing.T) backend.Backend {
		return backend.NewLimit(mem.New(), 2)
	})
}

// gauge records the most operations seen in flight at once.
type gauge struct {
	backend.Backend
	cur, peak atomic.Int64
}

func (g *gauge) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	n := g.cur.Add(1)
	defer g.cur.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(time.Millisecond)
	return g.Backend.Stat(ctx, h)
}

func TestLimitBoundsConcurrency(t *testing.T) {
	g := &gauge{Backend: mem.New()}
	l := backend.NewLimit(g, 3)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { l.Stat(t.Context(), backend.Handle{Type: backend.Index, Name: "x"}) })
	}
	wg.Wait()
	if p := g.peak.Load(); p < 2 || p > 3 {
		t.Fatalf("peak in flight %d, want 2..3", p)
	}
}

// An open reader holds its slot; closing it frees the slot, and a waiter
// gives up when its context ends instead of blocking forever.
func TestLimitLoadHoldsSlotUntilClose(t *testing.T) {
	m := mem.New()
	h := backend.Handle{Type: backend.Index, Name: "x"}
	if err := m.Save(t.Context(), h, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	l := backend.NewLimit(m, 1)
	rd, err := l.Load(t.Context(), h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Stat(ctx, h); err == nil {
		t.Fatal("second operation ran while the reader held the only slot")
	}
	io.ReadAll(rd)
	rd.Close()
	if _, err := l.Stat(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	// List's callback may use the backend even with a single slot.
	err = l.List(t.Context(), backend.Index, func(fi backend.FileInfo) error {
		_, err := l.Stat(t.Context(), backend.Handle{Type: backend.Index, Name: fi.Name})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

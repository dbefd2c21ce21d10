package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

func TestConformanceThrottle(t *testing.T) {
	backendtest.RunTests(t, func(*testing.T) backend.Backend {
		return backend.NewThrottle(mem.New(), 256<<20, 256<<20)
	})
}

// TestThrottleRate: moving 2 MiB at 4 MiB/s takes at least the time the
// bytes beyond one burst need; the unlimited direction is not held back
// by the other's limit. Only lower bounds on time are asserted.
func TestThrottleRate(t *testing.T) {
	const size, rate = 2 << 20, 4 << 20
	min := time.Duration(float64(size-256<<10) / rate * float64(time.Second))
	data := bytes.Repeat([]byte{7}, size)
	h := backend.Handle{Type: backend.Index, Name: strings.Repeat("ab", 32)}
	for _, c := range []struct {
		name     string
		up, down int64
	}{{"upload", rate, 0}, {"download", 0, rate}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			be := backend.NewThrottle(mem.New(), c.up, c.down)
			start := time.Now()
			if err := be.Save(ctx, h, data); err != nil {
				t.Fatal(err)
			}
			saved := time.Since(start)
			start = time.Now()
			got, err := backend.LoadAll(ctx, be, h, 0, 0)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("load: %v", err)
			}
			loaded := time.Since(start)
			limited, free := saved, loaded
			if c.down > 0 {
				limited, free = loaded, saved
			}
			t.Logf("limited %v (at least %v), unlimited %v", limited, min, free)
			if limited < min {
				t.Errorf("%s of %d bytes at %d B/s took %v, want at least %v", c.name, size, rate, limited, min)
			}
			// Timed against the limited direction, not the clock alone: a
			// loaded CI machine (the race detector) slows both, while a
			// throttle wrongly applied both ways makes them equal.
			if free >= min && free >= limited/2 {
				t.Errorf("the unlimited direction took %v, the limited one %v", free, limited)
			}
		})
	}
}

// TestThrottleHonoursContext: a wait that would outlast the context's
// deadline fails at once with context.DeadlineExceeded and saves nothing;
// a cancelled reader stops.
func TestThrottleHonoursContext(t *testing.T) {
	inner := mem.New()
	be := backend.NewThrottle(inner, 64<<10, 64<<10)
	h := backend.Handle{Type: backend.Index, Name: strings.Repeat("ab", 32)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := be.Save(ctx, h, make([]byte, 1<<20)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("save past the deadline: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("save waited %v before failing", d)
	}
	if _, err := inner.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a refused save stored the object: %v", err)
	}
	if err := inner.Save(context.Background(), h, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rd, err := be.Load(rctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rcancel()
	if _, err := io.ReadAll(rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
}

package backend_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

func newRetry(be backend.Backend, attempts int) *backend.Retry {
	r := backend.NewRetry(be, attempts)
	r.BaseDelay, r.MaxDelay = time.Microsecond, time.Millisecond
	return r
}

// The retry wrapper over a faulty backend must still meet the whole
// contract: faults are either retried away or surfaced, never half-done.
func TestConformanceRetryOverFaulty(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			backendtest.RunTests(t, func(*testing.T) backend.Backend {
				return newRetry(backendtest.NewFaulty(mem.New(), seed, 0.3), 30)
			})
		})
	}
}

func TestRetryGivesUpAndSkipsPermanent(t *testing.T) {
	ctx := context.Background()
	a := &alwaysFail{Backend: mem.New()}
	err := newRetry(a, 3).Save(ctx, backend.Handle{Type: backend.Index, Name: "x1"}, []byte("x"))
	if !backend.IsTransient(err) {
		t.Fatalf("want transient error after giving up, got %v", err)
	}
	if a.n != 3 {
		t.Fatalf("attempts = %d, want 3", a.n)
	}
	f := backendtest.NewFaulty(mem.New(), 1, 1.0)
	r := newRetry(f, 3)
	f.SetEnabled(false)
	before := f.Injected()
	if _, err := r.Stat(ctx, backend.Handle{Type: backend.Index, Name: "nope"}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat: %v", err)
	}
	if f.Injected() != before {
		t.Fatal("faults injected while disabled")
	}
}

func TestRetrySaveDifferentContentKeepsErrExists(t *testing.T) {
	ctx := context.Background()
	m := mem.New()
	h := backend.Handle{Type: backend.Manifests, Name: "m"}
	if err := m.Save(ctx, h, []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	// First attempt fails before reaching the store, second finds theirs.
	r := newRetry(&failFirst{Backend: m}, 5)
	if err := r.Save(ctx, h, []byte("ours")); !errors.Is(err, backend.ErrExists) {
		t.Fatalf("want ErrExists, got %v", err)
	}
}

type failFirst struct {
	backend.Backend
	done bool
}

func (f *failFirst) Save(ctx context.Context, h backend.Handle, d []byte) error {
	if !f.done {
		f.done = true
		return backend.ErrTransient
	}
	return f.Backend.Save(ctx, h, d)
}

func TestRetryHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := backend.NewRetry(backendtest.NewFaulty(mem.New(), 1, 1.0), 100)
	r.BaseDelay = time.Hour
	err := r.Save(ctx, backend.Handle{Type: backend.Index, Name: "x1"}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

type alwaysFail struct {
	backend.Backend
	n int
}

func (a *alwaysFail) Save(context.Context, backend.Handle, []byte) error {
	a.n++
	return fmt.Errorf("flaky: %w", backend.ErrTransient)
}

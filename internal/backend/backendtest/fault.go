package backendtest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/backend"
)

// Faulty wraps a backend.Backend and injects transient errors on a seeded random
// schedule, for tests. Half of the injected faults happen before the
// operation reaches the wrapped backend; the other half after it took
// effect (a lost acknowledgement), which is the harder case for callers.
type Faulty struct {
	backend.Backend
	rate     float64
	mu       sync.Mutex
	rng      *rand.Rand
	disabled atomic.Bool
	injected atomic.Int64
}

var _ backend.Backend = (*Faulty)(nil)

// NewFaulty injects a fault into roughly rate (0..1) of all operations.
func NewFaulty(be backend.Backend, seed uint64, rate float64) *Faulty {
	return &Faulty{Backend: be, rate: rate, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// SetEnabled turns injection on or off (e.g. to verify the end state).
func (f *Faulty) SetEnabled(on bool) { f.disabled.Store(!on) }

// Injected reports how many faults were injected so far.
func (f *Faulty) Injected() int64 { return f.injected.Load() }

type faultWhen int

const (
	faultNone faultWhen = iota
	faultBefore
	faultAfter
)

func (f *Faulty) draw() faultWhen {
	if f.disabled.Load() {
		return faultNone
	}
	f.mu.Lock()
	r := f.rng.Float64()
	f.mu.Unlock()
	switch {
	case r < f.rate/2:
		f.injected.Add(1)
		return faultBefore
	case r < f.rate:
		f.injected.Add(1)
		return faultAfter
	}
	return faultNone
}

func injected(op string, h any) error {
	return fmt.Errorf("backend: injected fault in %s %v: %w", op, h, backend.ErrTransient)
}

// Save implements backend.Backend.
func (f *Faulty) Save(ctx context.Context, h backend.Handle, data []byte) error {
	w := f.draw()
	if w == faultBefore {
		return injected("save", h)
	}
	err := f.Backend.Save(ctx, h, data)
	if err == nil && w == faultAfter {
		return injected("save", h)
	}
	return err
}

// Load implements backend.Backend.
func (f *Faulty) Load(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	w := f.draw()
	if w == faultBefore {
		return nil, injected("load", h)
	}
	rd, err := f.Backend.Load(ctx, h, offset, length)
	if err == nil && w == faultAfter {
		rd.Close()
		return nil, injected("load", h)
	}
	return rd, err
}

// Stat implements backend.Backend.
func (f *Faulty) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if f.draw() != faultNone {
		return backend.FileInfo{}, injected("stat", h)
	}
	return f.Backend.Stat(ctx, h)
}

// List implements backend.Backend. An "after" fault stops the listing part-way,
// as a dropped connection would.
func (f *Faulty) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	w := f.draw()
	if w == faultBefore {
		return injected("list", t)
	}
	n := 0
	err := f.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		if w == faultAfter && n > 0 {
			return injected("list", t)
		}
		n++
		return fn(fi)
	})
	if err == nil && w == faultAfter {
		return injected("list", t)
	}
	return err
}

// Remove implements backend.Backend.
func (f *Faulty) Remove(ctx context.Context, h backend.Handle) error {
	w := f.draw()
	if w == faultBefore {
		return injected("remove", h)
	}
	err := f.Backend.Remove(ctx, h)
	if err == nil && w == faultAfter {
		return injected("remove", h)
	}
	return err
}

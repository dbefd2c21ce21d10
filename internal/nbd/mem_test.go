package nbd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	allocGranule = 4096     // base:allocation tracking unit of memExport
	dirtyGranule = 64 << 10 // qemu:dirty-bitmap:x tracking unit
	dirtyContext = DirtyBitmapPrefix + "x"
)

var _ Export = (*memExport)(nil)

// memExport is an in-memory Export: allocation tracked per 4 KiB block,
// a fake dirty bitmap per 64 KiB block set by writes.
type memExport struct {
	mu      sync.RWMutex
	data    []byte
	alloc   []bool
	dirty   []bool
	ro      bool
	sizes   BlockSizes
	fail    atomic.Pointer[error] // returned by every data operation when set (setFail)
	zeroes  []string              // "punch=B fast=B" of each Zero call
	flushes atomic.Int64
	closes  atomic.Int64
}

func newMemExport(size int) *memExport {
	return &memExport{
		data:  make([]byte, size),
		alloc: make([]bool, (size+allocGranule-1)/allocGranule),
		dirty: make([]bool, (size+dirtyGranule-1)/dirtyGranule),
	}
}

func (m *memExport) Size() int64            { return int64(len(m.data)) }
func (m *memExport) ReadOnly() bool         { return m.ro }
func (m *memExport) MultiConn() bool        { return true }
func (m *memExport) BlockSizes() BlockSizes { return m.sizes }
func (m *memExport) Close() error           { m.closes.Add(1); return nil }

func (m *memExport) ReadAt(_ context.Context, p []byte, off int64) error {
	if err := m.failure(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	copy(p, m.data[off:])
	return nil
}

// setFail makes every data operation return err (nil: succeed again);
// the server's goroutines read it concurrently.
func (m *memExport) setFail(err error) { m.fail.Store(&err) }

func (m *memExport) failure() error {
	if p := m.fail.Load(); p != nil {
		return *p
	}
	return nil
}

// zeroCalls is a copy of the Zero calls recorded so far.
func (m *memExport) zeroCalls() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.zeroes)
}

// bytes is a copy of the export's contents, taken under its lock: the
// server's goroutines wrote them, and the test reads them after a client
// process (which the race detector cannot see) has finished.
func (m *memExport) bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.data)
}

func (m *memExport) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	if err := m.failure(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	m.mark(off, int64(len(p)), true)
	return nil
}

// mark sets allocation and dirtiness of [off, off+n).
func (m *memExport) mark(off, n int64, alloc bool) {
	for b := off / allocGranule; b*allocGranule < off+n; b++ {
		m.alloc[b] = alloc
	}
	for b := off / dirtyGranule; b*dirtyGranule < off+n; b++ {
		m.dirty[b] = true
	}
}

func (m *memExport) Zero(_ context.Context, off, n int64, punch, fast bool) error {
	if err := m.failure(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroes = append(m.zeroes, fmt.Sprintf("punch=%v fast=%v", punch, fast))
	clear(m.data[off : off+n])
	m.mark(off, n, !punch)
	return nil
}

func (m *memExport) Trim(ctx context.Context, off, n int64) error {
	return m.Zero(ctx, off, n, true, false)
}

func (m *memExport) Flush(context.Context) error {
	m.flushes.Add(1)
	return m.failure()
}

func (m *memExport) MetaContexts(prefix string) []string {
	var out []string
	for _, n := range []string{ContextBaseAllocation, dirtyContext} {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

func (m *memExport) BlockStatus(_ context.Context, name string, off, length int64) ([]Extent, error) {
	if err := m.failure(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	switch name {
	case ContextBaseAllocation:
		return extentsOf(off, length, allocGranule, func(b int64) uint32 {
			if m.alloc[b] {
				return 0
			}
			return StateHole | StateZero
		}), nil
	case dirtyContext:
		return extentsOf(off, length, dirtyGranule, func(b int64) uint32 {
			if m.dirty[b] {
				return StateDirty
			}
			return 0
		}), nil
	}
	return nil, fmt.Errorf("context %q: %w", name, ErrNotSupported)
}

// extentsOf builds merged extents over [off, off+length) from per-block
// flags. Unmerged on purpose where flags repeat across calls: the server
// must cope.
func extentsOf(off, length, gran int64, flags func(int64) uint32) []Extent {
	var out []Extent
	for pos := off; pos < off+length; {
		end := min((pos/gran+1)*gran, off+length)
		f := flags(pos / gran)
		if n := len(out); n > 0 && out[n-1].Flags == f {
			out[n-1].Length += uint64(end - pos)
		} else {
			out = append(out, Extent{Length: uint64(end - pos), Flags: f})
		}
		pos = end
	}
	return out
}

// memExporter serves named memExports.
type memExporter struct {
	exports map[string]*memExport
	opens   atomic.Int64
}

func (e *memExporter) Open(_ context.Context, name string) (Export, error) {
	m, ok := e.exports[name]
	if !ok {
		return nil, fmt.Errorf("export %q: %w", name, ErrUnknownExport)
	}
	e.opens.Add(1)
	return m, nil
}

func (e *memExporter) List(context.Context) ([]ExportInfo, error) {
	var out []ExportInfo
	for n := range e.exports {
		out = append(out, ExportInfo{Name: n, Description: "mem " + n})
	}
	return out, nil
}

// checkGoroutines fails the test if goroutines outlive it. Register it
// first so its cleanup runs after the others (server shutdown etc).
func checkGoroutines(t testing.TB) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// shortTempDir is a temp dir short enough for unix socket paths.
func shortTempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/backend"
)

// Backend keeps objects in a map.
type Backend struct {
	mu   sync.RWMutex
	objs map[backend.Handle][]byte
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend { return &Backend{objs: map[backend.Handle][]byte{}} }

// Save implements backend.Backend. The data is copied so the caller may
// reuse its buffer.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[h]; ok {
		return fmt.Errorf("mem: save %v: %w", h, backend.ErrExists)
	}
	b.objs[h] = bytes.Clone(data)
	return nil
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	data, ok := b.objs[h]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("mem: load %v: %w", h, backend.ErrNotFound)
	}
	n, err := backend.CheckRange(h, int64(len(data)), offset, length)
	if err != nil {
		return nil, err
	}
	// Objects are never mutated in place, so sharing the slice is safe.
	return io.NopCloser(bytes.NewReader(data[offset : offset+n])), nil
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	b.mu.RLock()
	data, ok := b.objs[h]
	b.mu.RUnlock()
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("mem: stat %v: %w", h, backend.ErrNotFound)
	}
	return backend.FileInfo{Name: h.Name, Size: int64(len(data))}, nil
}

// List implements backend.Backend. It works on a snapshot so fn may call
// back into the backend.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	b.mu.RLock()
	var fis []backend.FileInfo
	for h, d := range b.objs {
		if h.Type == t {
			fis = append(fis, backend.FileInfo{Name: h.Name, Size: int64(len(d))})
		}
	}
	b.mu.RUnlock()
	slices.SortFunc(fis, func(a, b backend.FileInfo) int { return cmpString(a.Name, b.Name) })
	for _, fi := range fis {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Remove implements backend.Backend.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[h]; !ok {
		return fmt.Errorf("mem: remove %v: %w", h, backend.ErrNotFound)
	}
	delete(b.objs, h)
	return nil
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }

// Corrupt flips one byte of a stored object, for tests of corruption
// detection. It reports whether the object existed.
func (b *Backend) Corrupt(h backend.Handle, offset int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.objs[h]
	if !ok || offset >= int64(len(d)) {
		return false
	}
	d = bytes.Clone(d)
	d[offset] ^= 0xff
	b.objs[h] = d
	return true
}

package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Cache wraps a remote Backend and keeps a local copy of the objects of
// some types (restic's cache: the index files every command reads), so a
// command fetches only what it has not seen before. Only content-addressed
// objects belong in it: valid(h, data) says whether data is h's content
// (its name is its hash), and a copy that fails the test is fetched again
// and replaced. Nothing in the cache is trusted otherwise, so it needs no
// fsync and may be deleted at any time.
//
//   - Load of a cached type reads the local copy when it is valid, else
//     loads the whole object, keeps it when valid, and serves the range.
//   - Save and Remove go to the backend first, then to the copy.
//   - A complete List of a cached type drops the copies it did not name
//     (removed by a prune, here or elsewhere).
//
// Stack it outermost (NewCache(NewRetry(...), ...)): a hit then costs no
// retry, limit or throttle.
type Cache struct {
	Backend
	dir   string
	valid func(Handle, []byte) bool
	types []FileType
}

var _ Backend = (*Cache)(nil)

// NewCache caches the objects of types under dir/<type>/<name>.
func NewCache(be Backend, dir string, valid func(Handle, []byte) bool, types ...FileType) *Cache {
	return &Cache{Backend: be, dir: dir, valid: valid, types: types}
}

func (c *Cache) cached(t FileType) bool { return slices.Contains(c.types, t) }

func (c *Cache) path(h Handle) string { return filepath.Join(c.dir, string(h.Type), h.Name) }

// Load implements Backend.
func (c *Cache) Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	if !c.cached(h.Type) || h.Valid() != nil {
		return c.Backend.Load(ctx, h, offset, length)
	}
	data, err := c.get(ctx, h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 || offset+length > int64(len(data)) {
		return nil, fmt.Errorf("backend: cache: load %s: range %d+%d past %d bytes: %w", h, offset, length, len(data), ErrInvalid)
	}
	end := int64(len(data))
	if length > 0 {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(data[offset:end])), nil
}

// get returns h's content from the copy, or from the backend, keeping it.
func (c *Cache) get(ctx context.Context, h Handle) ([]byte, error) {
	if data, err := os.ReadFile(c.path(h)); err == nil && c.valid(h, data) {
		return data, nil
	}
	data, err := LoadAll(ctx, c.Backend, h, 0, 0)
	if err != nil {
		return nil, err
	}
	if c.valid(h, data) {
		c.put(h, data)
	}
	return data, nil
}

// put writes the copy whole under a temporary name, then renames it: a
// reader sees no copy or a complete one. Failing to cache is no error.
func (c *Cache) put(h Handle, data []byte) {
	dir := filepath.Dir(c.path(h))
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), c.path(h))
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// Save implements Backend.
func (c *Cache) Save(ctx context.Context, h Handle, data []byte) error {
	if err := c.Backend.Save(ctx, h, data); err != nil {
		return err
	}
	if c.cached(h.Type) && c.valid(h, data) {
		c.put(h, data)
	}
	return nil
}

// Remove implements Backend.
func (c *Cache) Remove(ctx context.Context, h Handle) error {
	err := c.Backend.Remove(ctx, h)
	if c.cached(h.Type) && h.Valid() == nil && (err == nil || errors.Is(err, ErrNotFound)) {
		os.Remove(c.path(h))
	}
	return err
}

// List implements Backend.
func (c *Cache) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	if !c.cached(t) {
		return c.Backend.List(ctx, t, fn)
	}
	seen := map[string]bool{}
	err := c.Backend.List(ctx, t, func(fi FileInfo) error {
		seen[fi.Name] = true
		return fn(fi)
	})
	if err == nil {
		c.drop(t, seen)
	}
	return err
}

// drop removes the copies of type t that a complete listing did not name.
func (c *Cache) drop(t FileType, listed map[string]bool) {
	entries, err := os.ReadDir(filepath.Join(c.dir, string(t)))
	if err != nil {
		return
	}
	for _, e := range entries {
		if !listed[e.Name()] && e.Type()&fs.ModeType == 0 {
			os.Remove(filepath.Join(c.dir, string(t), e.Name()))
		}
	}
}

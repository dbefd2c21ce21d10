package backend_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

// hashNamed is the cache's test of content: a name is the hash of the
// bytes, as the repository names its index files.
func hashNamed(h backend.Handle, data []byte) bool {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]) == h.Name
}

func hashName(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Caching every type (and taking any content as valid, so the suite's
// names need not be hashes) must still meet the whole contract.
func TestConformanceCache(t *testing.T) {
	backendtest.RunTests(t, func(t *testing.T) backend.Backend {
		return backend.NewCache(mem.New(), t.TempDir(), func(backend.Handle, []byte) bool { return true }, backend.Types...)
	})
}

// countLoads counts the loads that reach the wrapped backend.
type countLoads struct {
	backend.Backend
	n atomic.Int64
}

func (c *countLoads) Load(ctx context.Context, h backend.Handle, off, n int64) (io.ReadCloser, error) {
	c.n.Add(1)
	return c.Backend.Load(ctx, h, off, n)
}

func loadAll(t *testing.T, be backend.Backend, h backend.Handle, off, n int64) []byte {
	t.Helper()
	b, err := backend.LoadAll(context.Background(), be, h, off, n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A cached object is fetched once, served (ranges too) from the copy
// after, fetched again when the copy is damaged, and its copy goes when
// a listing no longer names it. Other types are never cached.
func TestCacheHitsAndRepairs(t *testing.T) {
	ctx := context.Background()
	inner := &countLoads{Backend: mem.New()}
	dir := t.TempDir()
	c := backend.NewCache(inner, dir, hashNamed, backend.Index)
	data := bytes.Repeat([]byte("index entry "), 1000)
	h := backend.Handle{Type: backend.Index, Name: hashName(data)}
	if err := inner.Save(ctx, h, data); err != nil { // saved by another process
		t.Fatal(err)
	}
	for i, want := range []int64{1, 1, 1} {
		if got := loadAll(t, c, h, 0, 0); !bytes.Equal(got, data) {
			t.Fatalf("load %d: wrong bytes", i)
		}
		if inner.n.Load() != want {
			t.Fatalf("load %d: %d loads reached the backend, want %d", i, inner.n.Load(), want)
		}
	}
	if got := loadAll(t, c, h, 6, 5); string(got) != "entry" {
		t.Fatalf("cached range: %q", got)
	}
	if _, err := c.Load(ctx, h, int64(len(data))-1, 2); err == nil {
		t.Fatal("a range past the end loaded")
	}
	copyPath := filepath.Join(dir, "index", h.Name)
	if err := os.WriteFile(copyPath, []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := loadAll(t, c, h, 0, 0); !bytes.Equal(got, data) || inner.n.Load() != 2 {
		t.Fatalf("damaged copy: right bytes %v, %d backend loads", bytes.Equal(got, data), inner.n.Load())
	}
	if got, _ := os.ReadFile(copyPath); !bytes.Equal(got, data) {
		t.Fatal("damaged copy not replaced")
	}
	if err := inner.Remove(ctx, h); err != nil { // a prune elsewhere
		t.Fatal(err)
	}
	if err := c.List(ctx, backend.Index, func(backend.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(copyPath); !os.IsNotExist(err) {
		t.Fatalf("copy of a removed object kept after a listing: %v", err)
	}
	m := backend.Handle{Type: backend.Manifests, Name: hashName([]byte("m"))}
	if err := c.Save(ctx, m, []byte("m")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifests")); !os.IsNotExist(err) {
		t.Fatalf("an uncached type was cached: %v", err)
	}
}

// Save writes through to the copy, Remove removes it, and content that
// is not its name's is never kept.
func TestCacheWriteThrough(t *testing.T) {
	ctx := context.Background()
	inner := &countLoads{Backend: mem.New()}
	dir := t.TempDir()
	c := backend.NewCache(inner, dir, hashNamed, backend.Index)
	data := []byte("new index file")
	h := backend.Handle{Type: backend.Index, Name: hashName(data)}
	if err := c.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if got := loadAll(t, c, h, 0, 0); !bytes.Equal(got, data) || inner.n.Load() != 0 {
		t.Fatalf("load after save: right bytes %v, %d backend loads", bytes.Equal(got, data), inner.n.Load())
	}
	if err := c.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index", h.Name)); !os.IsNotExist(err) {
		t.Fatalf("copy kept after Remove: %v", err)
	}
	lie := backend.Handle{Type: backend.Index, Name: hashName([]byte("other"))}
	if err := c.Save(ctx, lie, data); err != nil {
		t.Fatal(err)
	}
	loadAll(t, c, lie, 0, 0)
	if _, err := os.Stat(filepath.Join(dir, "index", lie.Name)); !os.IsNotExist(err) {
		t.Fatalf("content that is not its name's was cached: %v", err)
	}
}

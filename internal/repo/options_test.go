package repo

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/repo/repotest"

	"github.com/blockwise/blockwise/internal/backend/mem"
)

// Settings belong to a Repository, not to the package: two handles on one
// repository in one process keep their own lock TTL, index memory limit
// and cache directory.
func TestOptionsPerRepository(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	cacheA, cacheB := t.TempDir(), t.TempDir()
	opts := testOptions()
	opts.IndexMemoryBlobs = -1 // no limit
	opts.CacheDir = cacheA
	a := initRepo(t, be, opts)
	img := repotest.Image(rand.New(rand.NewPCG(40, 40)), 2<<20, 64<<10, 0)
	m := backup(t, a, nil, img, nil)
	b, err := Open(ctx, be, testPassword, Options{LockTTL: -1, IndexMemoryBlobs: 4, CacheDir: cacheB, IndexSpillDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a2, err := Open(ctx, be, testPassword, Options{IndexMemoryBlobs: -1, CacheDir: cacheA})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()

	if len(b.idx.runs) == 0 || len(a2.idx.runs) != 0 {
		t.Errorf("spilled runs: %d with a limit of 4 blobs, %d with none; want some and none", len(b.idx.runs), len(a2.idx.runs))
	}
	repotest.Verify(t, b.OpenImage, m.ID, img)
	repotest.Verify(t, a2.OpenImage, m.ID, img)

	// b's locks are stale at once, a's last DefaultLockTTL.
	lb, err := b.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	la, err := a.Lock(ctx, true)
	if err != nil {
		t.Fatalf("a lock of a repository with LockTTL -1 kept another one out: %v", err)
	}
	if lb.info.Expires.After(lb.info.Time) || la.info.Expires.Sub(la.info.Time) != DefaultLockTTL {
		t.Errorf("lock lifetimes %v and %v, want negative and %v", lb.info.Expires.Sub(lb.info.Time), la.info.Expires.Sub(la.info.Time), DefaultLockTTL)
	}
	if l, err := b.Lock(ctx, true); !errors.Is(err, ErrLocked) {
		if err == nil {
			l.Unlock(ctx)
		}
		t.Fatalf("b's lock beside a's live exclusive lock: %v, want ErrLocked", err)
	}
	la.Unlock(ctx)
	lb.Unlock(ctx)

	// Each caches heads in its own directory.
	if _, err := b.Heads(ctx); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]int{cacheA: 0, cacheB: 1} {
		got, _ := filepath.Glob(filepath.Join(dir, "*", "heads", m.ID.String()))
		if len(got) != want {
			t.Errorf("%s holds %d heads, want %d", dir, len(got), want)
		}
	}
}

// The zero Options are the documented defaults.
func TestOptionsDefaults(t *testing.T) {
	s := Options{}.settings()
	want := Options{KDF: DefaultKDF(), IndexMemoryBlobs: DefaultIndexMemoryBlobs, RepackUnused: DefaultRepackUnused, LockTTL: DefaultLockTTL}
	if s != want {
		t.Errorf("zero Options settle to %+v, want %+v", s, want)
	}
	if got := (Options{IndexMemoryBlobs: -1}).settings().IndexMemoryBlobs; got != 0 {
		t.Errorf("IndexMemoryBlobs -1 settles to %d, want 0 (no limit)", got)
	}
}

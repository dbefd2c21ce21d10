package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// directSource reads a snapshot from the datastore's files and lends
// them, as the san transport does. onLend, if set, runs before each lend
// with the number of lends so far; verify replaces the snapshot's check.
type directSource struct {
	*disk.DirectSnapshot
	mu     sync.Mutex
	lends  int
	onLend func(n int)
	verify func() error
}

func (s *directSource) ReadAt(_ context.Context, p []byte, off int64) error {
	_, err := s.DirectSnapshot.ReadAt(p, off)
	return err
}

func (s *directSource) Lend(off, n int64) (*fsutil.Mapping, error) {
	s.mu.Lock()
	if s.onLend != nil {
		s.onLend(s.lends)
	}
	s.lends++
	s.mu.Unlock()
	return s.DirectSnapshot.Lend(off, n)
}

func (s *directSource) Verify() error {
	if s.verify != nil {
		if err := s.verify(); err != nil {
			return err
		}
	}
	return s.Check()
}

func (f *fixture) openDirect(src **directSource, setup func(*directSource)) func(context.Context, string, string) (Source, error) {
	return func(_ context.Context, name, snap string) (Source, error) {
		ds, err := disk.OpenSnapshotDirect(f.ds, name, snap)
		if err != nil {
			return nil, err
		}
		*src = &directSource{DirectSnapshot: ds}
		if setup != nil {
			setup(*src)
		}
		return *src, nil
	}
}

// randomDisk creates a disk of size bytes of random data, so no chunk
// deduplicates or compresses.
func randomDisk(t *testing.T, f *fixture, size int) (*disk.Disk, []byte) {
	t.Helper()
	d, err := f.th.h.Create("vm", int64(size), disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	repotest.Fill(repotest.Rand(7), img)
	if _, err := d.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	return d, img
}

// TestLentBackupRestores: backups through a lending source, full and
// incremental, restore to the disk's bytes; runs of at least minLend were
// lent, smaller ones copied.
func TestLentBackupRestores(t *testing.T) {
	f := newFixture(t)
	d, img := randomDisk(t, f, 16<<20)
	var src *directSource
	ctx := context.Background()
	full, err := Run(ctx, Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: f.openDirect(&src, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if src.lends != 4 { // 16 MiB in runs of 64 chunks
		t.Fatalf("%d runs lent, want 4", src.lends)
	}
	v1 := bytes.Clone(img)
	for _, w := range []struct{ off, n int }{{0, 64 << 10}, {5 << 20, 64 << 10}, {10 << 20, minLend}, {15 << 20, 64 << 10}} {
		p := bytes.Repeat([]byte{9}, w.n)
		d.WriteAt(p, int64(w.off))
		copy(img[w.off:], p)
	}
	inc, err := Run(ctx, Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: f.openDirect(&src, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if inc.Mode != "incremental" || src.lends != 1 {
		t.Fatalf("incremental: mode %s, %d runs lent", inc.Mode, src.lends)
	}
	if got := f.restoreInto(t, full.Manifest.ID, "r1", 16<<20); !bytes.Equal(got, v1) {
		t.Fatal("full restore point differs")
	}
	if got := f.restoreInto(t, inc.Manifest.ID, "r2", 16<<20); !bytes.Equal(got, img) {
		t.Fatal("incremental restore point differs")
	}
}

var errChanged = errors.New("test: the snapshot changed")

// TestLentChangeKeepsBlobsUnindexed: when lent bytes may have changed
// (Verify fails from the second run on), the backup fails, and no index
// file names a blob stored since: every index file was written before
// the change. With one-chunk packs, the second run alone fills 64 packs,
// which is when a writer writes an index file; only the check before it
// keeps that file from being written.
func TestLentChangeKeepsBlobsUnindexed(t *testing.T) {
	f := newFixture(t, func(o *repo.Options) { o.PackSize = 16 << 10 })
	randomDisk(t, f, 12<<20)
	ctx := context.Background()
	var (
		src       *directSource
		mu        sync.Mutex
		changed   bool
		idxBefore []string
	)
	setup := func(s *directSource) {
		s.onLend = func(n int) {
			if n == 1 {
				mu.Lock()
				changed, idxBefore = true, listNames(t, f.be, backend.Index)
				mu.Unlock()
			}
		}
		s.verify = func() error {
			mu.Lock()
			defer mu.Unlock()
			if changed {
				return errChanged
			}
			return nil
		}
	}
	_, err := Run(ctx, Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: f.openDirect(&src, setup), Workers: 1})
	if !errors.Is(err, errChanged) {
		t.Fatalf("backup over changed bytes: %v", err)
	}
	if got := listNames(t, f.be, backend.Index); !equalSets(got, idxBefore) {
		t.Fatalf("index files %v after the change, %v before it", got, idxBefore)
	}
	if ms := listNames(t, f.be, backend.Manifests); len(ms) != 0 {
		t.Fatalf("manifests after a failed backup: %v", ms)
	}
}

func listNames(t *testing.T, be backend.Backend, typ backend.FileType) []string {
	t.Helper()
	var out []string
	err := be.List(context.Background(), typ, func(fi backend.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalSets(a, b []string) bool {
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return len(a) == len(b)
}

// truncatingSource lends a copy of the disk from a file it truncates
// right after mapping it, so reading the lent bytes faults (SIGBUS).
type truncatingSource struct {
	*directSource
	path string
}

func (s *truncatingSource) Lend(off, n int64) (*fsutil.Mapping, error) {
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := fsutil.MapRead(f, off, n)
	if err != nil {
		return nil, err
	}
	return m, f.Truncate(0)
}

// TestLentFaultIsError: a fault reading lent bytes fails the backup with
// ErrSourceFault instead of killing the process, and leaves the
// repository consistent (checked after the test).
func TestLentFaultIsError(t *testing.T) {
	f := newFixture(t)
	_, img := randomDisk(t, f, 4<<20)
	path := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	var src *directSource
	open := func(ctx context.Context, name, snap string) (Source, error) {
		s, err := f.openDirect(&src, nil)(ctx, name, snap)
		if err != nil {
			return nil, err
		}
		return &truncatingSource{directSource: s.(*directSource), path: path}, nil
	}
	_, err := Run(context.Background(), Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: open})
	if !errors.Is(err, ErrSourceFault) {
		t.Fatalf("backup reading a truncated mapping: %v", err)
	}
	if ms := listNames(t, f.be, backend.Manifests); len(ms) != 0 {
		t.Fatalf("manifests after a failed backup: %v", ms)
	}
}

// TestLentChangeFailsDedupedBackup: a backup that stores nothing new (a
// forced full of unchanged data: every chunk and page deduplicates, so
// no index file is written) still fails when its lent bytes may have
// changed, instead of committing a point made of their hashes.
func TestLentChangeFailsDedupedBackup(t *testing.T) {
	f := newFixture(t)
	randomDisk(t, f, 4<<20)
	ctx := context.Background()
	var src *directSource
	if _, err := Run(ctx, Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: f.openDirect(&src, nil)}); err != nil {
		t.Fatal(err)
	}
	fail := func(s *directSource) { s.verify = func() error { return errChanged } }
	_, err := Run(ctx, Options{Disk: "vm", Host: f.th, Repo: f.repo, Open: f.openDirect(&src, fail), Full: true})
	if !errors.Is(err, errChanged) {
		t.Fatalf("deduplicated backup over changed bytes: %v", err)
	}
	if ms := listNames(t, f.be, backend.Manifests); len(ms) != 1 {
		t.Fatalf("manifests: %v, want the first backup's only", ms)
	}
}

// TestLentBugStillPanics: only a fault on the mapping becomes
// ErrSourceFault; a nil dereference while a run is lent (here: a copier
// without a writer) is a bug and still panics.
func TestLentBugStillPanics(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	m, err := fsutil.MapRead(file, 0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	c := &copier{chunk: 64 << 10, size: 64 << 10} // no writer
	var perr any
	func() {
		defer func() { perr = recover() }()
		err = c.putLent(context.Background(), &directSource{}, m, 0, 0)
	}()
	if perr == nil {
		t.Fatalf("a nil writer under a lend returned %v instead of panicking", err)
	}
}

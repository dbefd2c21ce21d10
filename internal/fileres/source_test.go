package fileres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

const testChunk = 64 << 10

// testImage backs img up into a new local repository and opens it.
func testImage(t *testing.T, img []byte) (*repo.Repository, *repo.Image, string) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, "pw", repo.Options{PackSize: 1 << 20, KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	m, err := repotest.Backup(ctx, r.NewWriter, nil, repo.Meta{Disk: "d", DiskUUID: "u", Size: uint64(len(img))}, img, testChunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return r, im, dir
}

// The Source's read-ahead: reading a 16 MiB image in order in 64 KiB
// pieces makes a few ranged loads (the run doubles up to 64 chunks), not
// one per chunk; random reads load small runs; every byte is right.
func TestSourceReadAhead(t *testing.T) {
	img := repotest.Image(repotest.Rand(7), 16<<20, testChunk, 0.2)
	_, im, _ := testImage(t, img)
	src := NewSource(context.Background(), im, SourceOptions{})
	got := make([]byte, len(img))
	for off := 0; off < len(img); off += 64 << 10 {
		if _, err := src.ReadAt(got[off:off+64<<10], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, img) {
		t.Fatal("sequential reads differ from the image")
	}
	calls, chunks := src.Loads()
	if chunks != 256 || calls > 10 {
		t.Fatalf("a sequential read of 256 chunks took %d loads of %d chunks, want a few", calls, chunks)
	}
	// Reads again come from the cache.
	src.ReadAt(got[:1<<20], 0)
	if c2, _ := src.Loads(); c2 != calls {
		t.Fatalf("cached reads loaded again: %d loads, were %d", c2, calls)
	}
	// Random reads past the cache's end: small runs.
	small := NewSource(context.Background(), im, SourceOptions{CacheBytes: 1 << 20, ReadAhead: 64})
	buf := make([]byte, 100)
	for _, off := range []int64{5 << 20, 1 << 20, 9<<20 + 77, 3 << 20} {
		if _, err := small.ReadAt(buf, off); err != nil || !bytes.Equal(buf, img[off:off+100]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if calls, chunks := small.Loads(); calls != 4 || chunks != 4*minReadAhead {
		t.Fatalf("4 random reads: %d loads of %d chunks, want 4 of %d", calls, chunks, 4*minReadAhead)
	}
	if n, err := src.ReadAt(buf, int64(len(img))-10); n != 10 || err != io.EOF {
		t.Fatalf("read over the end: %d %v", n, err)
	}
}

// A damaged pack fails the reads of its chunks with the repository's
// ErrCorrupt (every chunk is verified), and the next read tries again.
func TestSourceVerifies(t *testing.T) {
	img := repotest.Image(repotest.Rand(8), 2<<20, testChunk, 0)
	_, im, dir := testImage(t, img)
	damagePacks(t, dir)
	src := NewSource(context.Background(), im, SourceOptions{})
	if _, err := src.ReadAt(make([]byte, 10), 0); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("read of a damaged chunk: %v, want ErrCorrupt", err)
	}
	if _, err := src.ReadAt(make([]byte, 10), 0); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("second read: %v", err)
	}
	if calls, _ := src.Loads(); calls != 2 {
		t.Fatalf("a failed load was cached: %d loads", calls)
	}
}

// Concurrent readers in order and at random share loads and all read the
// image's bytes (run under -race by scripts/test.sh's race pass too).
func TestSourceConcurrent(t *testing.T) {
	img := repotest.Image(repotest.Rand(9), 8<<20, testChunk, 0.1)
	_, im, _ := testImage(t, img)
	src := NewSource(context.Background(), im, SourceOptions{CacheBytes: 2 << 20, ReadAhead: 16})
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			buf := make([]byte, 40000)
			for i := 0; i < 200; i++ {
				off := int64((i*40000 + g*7777) % (len(img) - len(buf)))
				if g%2 == 1 {
					off = int64(repotest.Rand(uint64(i)).IntN(len(img) - len(buf)))
				}
				if _, err := src.ReadAt(buf, off); err != nil || !bytes.Equal(buf, img[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("reader %d at %d: %v", g, off, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	src.Wait()
}

// damagePacks flips bytes in every stored blob of the repository at dir.
func damagePacks(t *testing.T, dir string) {
	t.Helper()
	var packs []string
	filepath.Walk(filepath.Join(dir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			packs = append(packs, p)
		}
		return err
	})
	if len(packs) == 0 {
		t.Fatal("no packs")
	}
	for _, p := range packs {
		b, _ := os.ReadFile(p)
		for i := 100; i < len(b); i += 4096 {
			b[i] ^= 0xFF
		}
		os.WriteFile(p, b, 0o644)
	}
}

package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/overlay"
)

// TestPointExport reads a restore point through its NBD export at random
// offsets and lengths (chunk-aligned or not, up to the short last chunk)
// and checks block status and the refusals against the backed-up image.
func TestPointExport(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const size = 8<<20 + 12<<10 // a short last chunk
	d, err := f.th.h.Create("vm", size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(3))
	img := make([]byte, size)
	for i := 0; i < size; i += 256 << 10 {
		if rng.Intn(2) == 0 {
			rng.Read(img[i:min(i+256<<10, size)])
		}
	}
	d.WriteAt(img, 0)
	res := f.backup(t, "vm")
	im, err := f.repo.OpenImage(ctx, res.Manifest.ID)
	if err != nil {
		t.Fatal(err)
	}
	exp := NewPointExport(im)
	if exp.Size() != size || !exp.ReadOnly() {
		t.Fatalf("size %d, read-only %v", exp.Size(), exp.ReadOnly())
	}
	for i := range 300 {
		off := rng.Int63n(size)
		n := 1 + rng.Int63n(min(size-off, 1<<20))
		if i%3 == 0 { // whole chunks
			off &^= 64<<10 - 1
			n = min((n+64<<10-1)&^(64<<10-1), size-off)
		}
		p := bytes.Repeat([]byte{0xAA}, int(n)) // zero slots must be cleared
		if err := exp.ReadAt(ctx, p, off); err != nil {
			t.Fatalf("read %d+%d: %v", off, n, err)
		}
		if !bytes.Equal(p, img[off:off+n]) {
			t.Fatalf("read %d+%d differs from the image", off, n)
		}
	}
	checkBlockStatus(t, exp, img, 0)
	checkBlockStatus(t, exp, img, 64<<10+512)
	// Read-ahead under small sequential reads, and whole-chunk reads
	// through a cache that holds the image (twice: loaded, then cached).
	if im, err = f.repo.OpenImage(ctx, res.Manifest.ID); err != nil { // an empty cache
		t.Fatal(err)
	}
	im.SetCacheChunks(size/(64<<10) + 1)
	exp = NewPointExport(im)
	exp.SetReadAhead(ctx, 8)
	for _, step := range []int64{4 << 10, 256 << 10, 256 << 10} {
		for off := int64(0); off < size; off += step {
			p := bytes.Repeat([]byte{0xAA}, int(min(step, size-off)))
			if err := exp.ReadAt(ctx, p, off); err != nil || !bytes.Equal(p, img[off:off+int64(len(p))]) {
				t.Fatalf("read %d+%d with read-ahead and a whole-image cache: %v", off, len(p), err)
			}
		}
	}
	exp.Wait()
	for name, err := range map[string]error{
		"write": exp.WriteAt(ctx, []byte{1}, 0, false),
		"zero":  exp.Zero(ctx, 0, 512, true, false),
		"trim":  exp.Trim(ctx, 0, 512),
	} {
		if !errors.Is(err, nbd.ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", name, err)
		}
	}
	x := PointExporter{Export: exp}
	for _, name := range []string{"", res.Manifest.ID.String(), res.Manifest.ID.Short()} {
		if _, err := x.Open(ctx, name); err != nil {
			t.Errorf("open %q: %v", name, err)
		}
	}
	if _, err := x.Open(ctx, "other"); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Errorf("open other: %v", err)
	}
}

// checkBlockStatus walks base:allocation from off to the end and checks
// every extent against the image: holes must be zero chunks, and data
// extents must hold a chunk with data.
func checkBlockStatus(t *testing.T, exp *PointExport, img []byte, off int64) {
	t.Helper()
	const cs = 64 << 10
	for pos := off; pos < int64(len(img)); {
		ext, err := exp.BlockStatus(context.Background(), nbd.ContextBaseAllocation, pos, int64(len(img))-pos)
		if err != nil || len(ext) == 0 {
			t.Fatalf("block status at %d: %v %v", pos, ext, err)
		}
		for _, e := range ext {
			end := pos + int64(e.Length)
			for c := pos / cs; c*cs < end; c++ {
				chunk := img[c*cs : min((c+1)*cs, int64(len(img)))]
				hole := e.Flags == nbd.StateHole|nbd.StateZero
				if hole != allZero(chunk) {
					t.Fatalf("extent %d+%d flags %d, chunk %d all zero: %v", pos, e.Length, e.Flags, c, allZero(chunk))
				}
			}
			pos = end
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestPointExportReadNoWait: a read whose chunks are cached is served
// without the repository, anything else is refused with ErrNotCached
// (the NBD server then reads on a worker); sequential small reads served
// that way keep the read-ahead going; on a writable export, a read of
// blocks the guest wrote is refused (the overlay is not in the cache).
func TestPointExportReadNoWait(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const size = 8 << 20
	d, err := f.th.h.Create("vm", size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	rand.New(rand.NewSource(4)).Read(img[:size-1<<20]) // the last MiB zero
	d.WriteAt(img, 0)
	res := f.backup(t, "vm")
	im, err := f.repo.OpenImage(ctx, res.Manifest.ID)
	if err != nil {
		t.Fatal(err)
	}
	exp := NewPointExport(im)
	exp.SetReadAhead(ctx, 8)
	p := make([]byte, 4<<10)
	if err := exp.ReadAtNoWait(ctx, p, 100<<10); !errors.Is(err, ErrNotCached) {
		t.Fatalf("uncached read: %v, want ErrNotCached", err)
	}
	// As the server does: no-wait first, a worker's ReadAt on a miss.
	misses := 0
	for off := int64(0); off < size; off += int64(len(p)) {
		for i := range p {
			p[i] = 0xAA
		}
		if err := exp.ReadAtNoWait(ctx, p, off); errors.Is(err, ErrNotCached) {
			misses++
			if err := exp.ReadAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, img[off:off+int64(len(p))]) {
			t.Fatalf("read %d differs from the image", off)
		}
		exp.Wait() // the read-ahead a read started, before the next read
	}
	if misses > 2 {
		t.Fatalf("%d of %d sequential 4 KiB reads missed the cache: read-ahead stalled", misses, size/len(p))
	}
	ov, err := overlay.Open(t.TempDir(), res.Manifest.ID.String(), size)
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	w, err := NewWritableExport(exp, ov)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt(ctx, bytes.Repeat([]byte{7}, 4<<10), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := w.ReadAtNoWait(ctx, p, 1<<20); !errors.Is(err, ErrNotCached) {
		t.Fatalf("read of a written block: %v, want ErrNotCached", err)
	}
	if err := w.ReadAtNoWait(ctx, p, 2<<20); err != nil || !bytes.Equal(p, img[2<<20:2<<20+len(p)]) {
		t.Fatalf("cached read of an unwritten block: %v", err)
	}
}

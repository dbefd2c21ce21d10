package repo

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// dataReads counts the bytes of whole packs read, and records the
// blobs read alone (pack, offset).
type dataReads struct {
	backend.Backend
	whole *atomic.Int64
	mu    *sync.Mutex
	blobs map[blobAt]int
}

type blobAt struct {
	pack string
	off  int64
}

func (d dataReads) Load(ctx context.Context, h backend.Handle, off, n int64) (io.ReadCloser, error) {
	rc, err := d.Backend.Load(ctx, h, off, n)
	if err != nil || h.Type != backend.Data {
		return rc, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if off == 0 && n == 0 {
		d.whole.Add(int64(len(b)))
	} else {
		d.mu.Lock()
		d.blobs[blobAt{h.Name, off}]++
		d.mu.Unlock()
	}
	return io.NopCloser(bytes.NewReader(b)), err
}

// TestCheckReadsChunksOnce: check --read-data reads every pack once and
// proves the points' roots (T6) from that read alone: the bytes read
// from packs are the packs' sizes, for points sharing chunks, at two
// tree block sizes. It read every chunk twice (the pack's check, then
// the proof).
func TestCheckReadsChunksOnce(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := initRepo(t, be, testOptions())
	cs := int(r.Config().ChunkSize)
	img := make([]byte, 40*cs+cs/2) // a short last slot
	repotest.Fill(repotest.Rand(3), img[:20*cs])
	copy(img[30*cs:], img[:5*cs]) // chunks the point shares with itself
	var parent *Manifest
	for i, bs := range []int{4096, cs} {
		img[cs*i+7] ^= 0xff // each point has a chunk of its own
		parent = writeTreePoint(t, r, parent, img, bs)
	}
	var packBytes int64
	be.List(ctx, backend.Data, func(fi backend.FileInfo) error { packBytes += fi.Size; return nil })
	reads := dataReads{Backend: be, whole: &atomic.Int64{}, mu: &sync.Mutex{}, blobs: map[blobAt]int{}}
	r2, err := Open(ctx, reads, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res, err := r2.Check(ctx, CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.RootsProven != 2 || reads.whole.Load() != packBytes {
		t.Fatalf("%d roots proven (want 2), %d bytes of whole packs read of %d", res.RootsProven, reads.whole.Load(), packBytes)
	}
	packs, _, err := r2.idx.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var chunks, chunkBytes int
	for id, es := range packs {
		for _, e := range es {
			if n := reads.blobs[blobAt{id.String(), int64(e.Offset)}]; n > 0 && e.Type == BlobChunk {
				chunks += n
				chunkBytes += n * int(e.Stored)
			}
		}
	}
	t.Logf("read %d bytes of whole packs (%d), and %d chunks again (%d bytes)", reads.whole.Load(), packBytes, chunks, chunkBytes)
	if chunks != 0 {
		t.Fatalf("the proof read %d chunks again (%d bytes) after the packs' check", chunks, chunkBytes)
	}
}

// writeTreePoint commits img as a point with its tree of block size bs.
func writeTreePoint(t *testing.T, r *Repository, parent *Manifest, img []byte, bs int) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, parent, Meta{Disk: "vm", Size: uint64(len(img))})
	if err != nil {
		t.Fatal(err)
	}
	cs := int(r.Config().ChunkSize)
	for s := 0; s*cs < len(img); s++ {
		if err := w.PutChunk(ctx, uint64(s), img[s*cs:min((s+1)*cs, len(img))]); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := hashtree.Build(ctx, bytes.NewReader(img), int64(len(img)), bs, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetTree(FullTree{tr}, true); err != nil {
		t.Fatal(err)
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// putSlots stores slots [from, to) of img.
func putSlots(t *testing.T, w *SnapshotWriter, img []byte, from, to uint64) {
	t.Helper()
	for s := from; s < to; s++ {
		if err := w.PutChunk(context.Background(), s, img[s<<16:(s+1)<<16]); err != nil {
			t.Fatal(err)
		}
	}
}

func newWriter(t *testing.T, r *Repository, disk string, size int) *SnapshotWriter {
	t.Helper()
	w, err := r.NewWriter(context.Background(), nil, Meta{Disk: disk, Size: uint64(size)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func commit(t *testing.T, w *SnapshotWriter) *Manifest {
	t.Helper()
	m, err := w.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPackBufsSharedByWriters: the pack buffer a committed writer gave
// back is the one the next writer of the repository fills (backup
// --parallel: the disks after the first N fault in no fresh buffer), and
// once every writer is done the repository keeps none of them.
func TestPackBufsSharedByWriters(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(7, 7)), 2<<20, 64<<10, 0)
	a, b := newWriter(t, r, "a", len(img)), newWriter(t, r, "b", len(img))
	putSlots(t, a, img, 0, 8)
	putSlots(t, b, img, 8, 16)
	ma := commit(t, a) // its partial pack is uploaded, its buffer kept: b is still open
	if len(r.bufs.free) != 1 {
		t.Fatalf("after one of two writers committed, %d idle buffers, want 1", len(r.bufs.free))
	}
	kept := unsafe.SliceData(*r.bufs.free[0])
	c := newWriter(t, r, "c", len(img))
	putSlots(t, c, img, 16, 24)
	if got := unsafe.SliceData(c.pk.cur.buf); got != kept {
		t.Errorf("the next writer's pack is in a fresh buffer, not the one given back")
	}
	mb, mc := commit(t, b), commit(t, c)
	if len(r.bufs.free) != 0 {
		t.Errorf("%d idle buffers kept with no writer open", len(r.bufs.free))
	}
	for i, m := range []*Manifest{ma, mb, mc} {
		want := make([]byte, len(img))
		copy(want[i*8<<16:(i+1)*8<<16], img[i*8<<16:(i+1)*8<<16])
		repotest.Verify(t, r.OpenImage, m.ID, want)
	}
}

// TestManyWritersOneFails: eight writers into one repository at once,
// sharing pack buffers, each of a different disk and several packs, one
// of them aborted halfway (after uploading packs): every other point
// restores byte for byte and check --read-data is clean (a buffer reused
// while its pack was still being written would corrupt another disk's).
func TestManyWritersOneFails(t *testing.T) {
	for _, name := range []string{"mem", "local"} {
		t.Run(name, func(t *testing.T) {
			var be backend.Backend = mem.New()
			if name == "local" {
				var err error
				if be, err = local.Open(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			manyWritersOneFails(t, initRepo(t, be, testOptions()))
		})
	}
}

func manyWritersOneFails(t *testing.T, r *Repository) {
	const n, failing = 8, 3
	imgs := make([][]byte, n)
	for i := range imgs {
		imgs[i] = repotest.Image(rand.New(rand.NewPCG(uint64(i), 9)), 6<<20, 64<<10, 0.1)
	}
	ms := make([]*Manifest, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i != failing {
				ms[i], errs[i] = tryBackupOf(r, fmt.Sprint("d", i), imgs[i])
				return
			}
			errs[i] = abortHalfway(r, imgs[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	for i, m := range ms {
		if i != failing {
			repotest.Verify(t, r.OpenImage, m.ID, imgs[i])
		}
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	if r.bufs.writers != 0 {
		t.Errorf("%d writers still counted after all ended", r.bufs.writers)
	}
}

func tryBackupOf(r *Repository, disk string, img []byte) (*Manifest, error) {
	return repotest.Backup(context.Background(), r.NewWriter, nil, Meta{Disk: disk, Size: uint64(len(img))},
		img, int(r.cfg.ChunkSize), nil)
}

// abortHalfway stores half of img (several packs) and aborts.
func abortHalfway(r *Repository, img []byte) error {
	ctx := context.Background()
	w, err := r.NewWriter(ctx, nil, Meta{Disk: "failing", Size: uint64(len(img))})
	if err != nil {
		return err
	}
	for s := range uint64(len(img) >> 17) {
		if err := w.PutChunk(ctx, s, img[s<<16:(s+1)<<16]); err != nil {
			return err
		}
	}
	if w.pk.stored == 0 {
		return errors.New("the aborted writer uploaded no pack")
	}
	return w.Abort(ctx)
}

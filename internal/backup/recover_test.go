package backup

import (
	"bytes"
	"context"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/overlay"
)

// TestRecoverWhileWriting: three writers (unaligned writes, zeroes,
// trims, each in its own interleaved 8 KiB stripes, so the last write to
// every byte is known) hit the writable export before, during and after
// Recover; the new disk and the export then both equal the model.
func TestRecoverWhileWriting(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const size = 4<<20 + 4096 + 512 // a short last chunk and block
	d, err := f.th.h.Create("vm", size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(5))
	img := make([]byte, size)
	for i := 0; i < size; i += 128 << 10 {
		if rng.Intn(3) > 0 {
			rng.Read(img[i:min(i+128<<10, size)])
		}
	}
	d.WriteAt(img, 0)
	res := f.backup(t, "vm")
	im, err := f.repo.OpenImage(ctx, res.Manifest.ID)
	if err != nil {
		t.Fatal(err)
	}
	ov, err := overlay.Open(t.TempDir(), res.Manifest.ID.String(), size)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWritableExport(NewPointExport(im), ov)
	if err != nil {
		t.Fatal(err)
	}
	must(t, SaveRecoverState(ov.Dir(), RecoverState{Point: res.Manifest.ID.String(), Disk: "new", Phase: PhaseCopying}))
	model := bytes.Clone(img)
	var done atomic.Bool
	var wg sync.WaitGroup
	const stripe = 8 << 10
	for k := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(k)))
			for i := 0; !done.Load() || i%50 != 0; i++ {
				s := int64(rng.Intn(size/stripe/3))*3 + int64(k) // one of writer k's stripes
				off := s*stripe + rng.Int63n(stripe)
				n := min(1+rng.Int63n(stripe), (s+1)*stripe-off, size-off)
				if n <= 0 {
					continue
				}
				p := make([]byte, n)
				var err error
				switch rng.Intn(4) {
				case 0:
					err = w.Zero(ctx, off, n, true, false)
				case 1:
					err = w.Trim(ctx, off, n)
				default:
					rng.Read(p)
					err = w.WriteAt(ctx, p, off, rng.Intn(8) == 0)
				}
				if err != nil {
					t.Error(err)
					return
				}
				copy(model[off:], p)
			}
		})
	}
	tgt := &memTarget{data: make([]byte, size), lossAt: -1} // a fake beside the host's disks the CLI tests use
	r, err := Recover(ctx, RecoverOptions{Export: w, Target: tgt, Workers: 3})
	done.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !w.Switched() {
		t.Fatalf("not switched: %+v", r)
	}
	got := make([]byte, size)
	must(t, w.ReadAt(ctx, got, 0))
	if !bytes.Equal(got, model) || !bytes.Equal(tgt.data, model) {
		t.Fatalf("after the switch: export equal %v, new disk equal %v (%+v)", bytes.Equal(got, model), bytes.Equal(tgt.data, model), r)
	}
	if overlay.Exists(ov.Dir()) {
		t.Fatal("the overlay is left")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

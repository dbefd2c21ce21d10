package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/local"
)

// TestPruneMemory: Prune goes through the index files one at a time, so
// beyond the lookup index it holds the mark set (~10–25 bytes a live
// blob), a few bytes a pack and a bounded working set (an index file or
// two), not every entry (~50 bytes a blob, as it once did) nor a second
// lookup index (~60). Half the blobs die in whole packs, so the index is
// rewritten too.
func TestPruneMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("stores ~200k blobs")
	}
	if os.Getenv("BLOCKWISE_TEST_INDEX_BLOBS") != "" {
		t.Skip("measures prune beside a lookup index in memory; spilling 200k blobs a few at a time takes minutes")
	}
	ctx := context.Background()
	// A local backend: what it stores is not on the heap.
	be, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := initRepo(t, be, Options{ChunkSize: 4 << 10, PackSize: 16 << 10, PageSlots: 4096, KDF: testKDF})
	const slots = 128 << 10
	first := stampedBackup(t, r, nil, slots, 1, slots)
	second := stampedBackup(t, r, first, slots, 2, slots/2)
	if err := r.Forget(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	var peak atomic.Uint64
	base := heapPeakDuring(&peak, func() {
		st, err := r2.Prune(ctx)
		if err != nil || !st.IndexRewritten || st.PacksRemoved == 0 {
			t.Errorf("prune: %+v, %v", st, err)
		}
	})
	const indexed, allowance = slots + slots/2, 10 << 20
	grew := peak.Load() - base
	t.Logf("prune: peak %.1f MiB above the open repository (%.1f bytes per indexed blob)", float64(grew)/(1<<20), float64(grew)/indexed)
	if grew > 30*indexed+allowance {
		t.Errorf("prune took %d bytes more than the open repository, want <= %d (30 per indexed blob + %d)", grew, 30*indexed+allowance, allowance)
	}
	im, err := r2.OpenImage(ctx, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{0, slots/2 - 1, slots / 2, slots - 1} {
		got := make([]byte, 4<<10)
		if _, err := im.ReadAt(got, int64(s)*4<<10); err != nil || !bytes.Equal(got, stamped(gen(s, slots/2), s)) {
			t.Fatalf("slot %d after prune: %v", s, err)
		}
	}
}

func gen(slot, changed int) uint64 {
	if slot < changed {
		return 2
	}
	return 1
}

// stamped is slot s's chunk in generation g: unique and cheap to compress.
func stamped(g uint64, s int) []byte {
	b := make([]byte, 4<<10)
	binary.LittleEndian.PutUint64(b, g<<32|uint64(s)+1)
	return b
}

// stampedBackup writes slots [0, changed) in generation g.
func stampedBackup(t *testing.T, r *Repository, parent *Manifest, slots int, g uint64, changed int) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, parent, Meta{Disk: "d", Size: uint64(slots) << 12})
	if err != nil {
		t.Fatal(err)
	}
	for s := range changed {
		if err := w.PutChunk(ctx, uint64(s), stamped(g, s)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// heapPeakDuring runs fn with the collector running often (GOGC=5) and
// samples the live heap each cycle leaves (runtime/metrics), stores the
// highest sample in peak, and returns the live heap before fn. Sampling
// HeapAlloc instead would measure garbage awaiting collection.
func heapPeakDuring(peak *atomic.Uint64, fn func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := live()
	peak.Store(base)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := live(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return base
}

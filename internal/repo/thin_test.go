package repo

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
)

// TestThinDiskCommitCost: a thin disk costs what it holds. A full backup
// of a 2 TiB disk with 4 MiB written (8192 index pages, all but one
// empty) commits without building a page of IDs for each empty page: the
// commit allocates well under the 1 GiB that 8192 pages of 4096 IDs take
// (it did before: 2x the backup time of a small disk holding the same
// data). An incremental on top of it likewise. Both restore what was
// written and zeros elsewhere.
func TestThinDiskCommitCost(t *testing.T) {
	opts := testOptions()
	opts.PageSlots = DefaultPageSlots // the production geometry: 8192 pages
	r := initRepo(t, mem.New(), opts)
	ctx := context.Background()
	const size = 2 << 40
	data := bytes.Repeat([]byte("thin"), int(r.cfg.ChunkSize)/4)
	var parent *Manifest
	for round, slot := range []uint64{1 << 20, 3 << 20} {
		w, err := r.NewWriter(ctx, parent, Meta{Disk: "thin", DiskUUID: "u", Size: size})
		if err != nil {
			t.Fatal(err)
		}
		data[0] = byte(round) // a new chunk each round
		for s := slot; s < slot+64; s++ {
			if err := w.PutChunk(ctx, s, data); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := w.Commit(ctx)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
			t.Errorf("round %d: commit of a 2 TiB thin disk allocated %d MiB, want < 64 MiB", round, alloc>>20)
		}
		img, err := r.OpenImage(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(data))
		for _, probe := range []struct {
			slot uint64
			want []byte
		}{{slot, data}, {slot + 63, data}, {slot + 64, make([]byte, len(data))}, {0, make([]byte, len(data))}, {size/uint64(len(data)) - 1, make([]byte, len(data))}} {
			if _, err := img.ReadAt(buf, int64(probe.slot)*int64(len(data))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, probe.want) {
				t.Errorf("round %d: slot %d reads wrong data", round, probe.slot)
			}
		}
		parent = m
	}
}

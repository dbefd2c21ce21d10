package cbt

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

func mustMark(t *testing.T, tr *Tracker, off, n int64) {
	t.Helper()
	if err := tr.Mark(off, n); err != nil {
		t.Fatalf("mark %d+%d: %v", off, n, err)
	}
}

func types(recs []Record) []byte {
	var ts []byte
	for _, r := range recs {
		ts = append(ts, r.Type)
	}
	return ts
}

// When the journal has no room left for block records (its reserve ran
// short: ErrRegionsOnly; or it is full: ENOSPC), Mark logs a
// RecordRegionsOnly and from then on region records only, until the next
// checkpoint: rewrites in recorded regions log nothing at all. Replay
// counts the session's regions whole, under the same boot too.
func TestRegionsOnly(t *testing.T) {
	for _, fail := range []error{ErrRegionsOnly, fmt.Errorf("append: %w", syscall.ENOSPC)} {
		tr, ckpt, log := session(t, Config{RegionSize: 1 << 20}, 16<<20, bootA)
		mustMark(t, tr, 3<<20, 1) // block 48, region 3: exact
		log.blocksFail = fail
		mustMark(t, tr, 3<<20+64*kib, 1) // block 49: RecordRegionsOnly
		mustMark(t, tr, 9<<20, 1)        // block 144: region 9 only
		n := len(log.recs)
		mustMark(t, tr, 3<<20+128*kib, 1)
		mustMark(t, tr, 9<<20+64*kib, 4096)
		want := []byte{RecordSession, RecordBlocks, RecordIntent, RecordRegionsOnly, RecordIntent}
		if got := types(log.recs); len(log.recs) != n || !slices.Equal(got, want) {
			t.Fatalf("%v: records %#x, want %#x", fail, got, want)
		}
		regions := roaring.New()
		regions.AddRange(48, 64)
		regions.AddRange(144, 160)
		for _, boot := range []string{bootA, bootB} {
			if got := replay(t, ckpt, boot, log.recs); !got.Equals(regions) {
				t.Fatalf("%v: boot %s recovered %v, want regions 3 and 9 whole", fail, boot, got.ToArray())
			}
		}
		tr.Encode(false) // a checkpoint: a new journal, block records again
		tr.Committed(false)
		log.blocksFail, log.recs = nil, nil
		mustMark(t, tr, 5<<20, 1)
		if got := types(log.recs); !slices.Equal(got, []byte{RecordBlocks, RecordIntent}) {
			t.Fatalf("%v: records after the checkpoint %#x", fail, got)
		}
	}
}

// Replay of RecordRegionsOnly: its segment's regions count whole (those
// recorded before it too, which the writes after it rely on), its block
// records before it count, those after it do not; other segments are
// judged as before.
func TestReplayRegionsOnly(t *testing.T) {
	bm := func(x ...uint32) []byte { return EncodeBitmap(roaring.BitmapOf(x...)) }
	whole := func(blocks []uint32, regions ...uint64) *roaring.Bitmap {
		b := roaring.BitmapOf(blocks...)
		for _, r := range regions {
			b.AddRange(r*16, (r+1)*16)
		}
		return b
	}
	only := Record{RecordRegionsOnly, nil}
	tests := []struct {
		name string
		recs []Record
		want *roaring.Bitmap
	}{
		{"then a new session", []Record{SessionRecord(bootA), {RecordBlocks, bm(200)}, {RecordIntent, bm(12)}, {RecordIntent, bm(3)}, only, {RecordIntent, bm(9)},
			SessionRecord(bootA), {RecordBlocks, bm(80)}, {RecordIntent, bm(5)}}, whole([]uint32{80}, 3, 9, 12)},
		{"blocks before it trusted", []Record{SessionRecord(bootA), {RecordBlocks, bm(250)}, only}, whole([]uint32{250})},
		{"blocks after it not", []Record{SessionRecord(bootA), {RecordIntent, bm(3)}, only, {RecordBlocks, bm(200)}}, whole(nil, 3)},
		{"another boot", []Record{SessionRecord(bootB), {RecordBlocks, bm(200)}, {RecordIntent, bm(12)}, only}, whole(nil, 12)},
		{"no session", []Record{only, {RecordIntent, bm(1)}}, whole(nil, 1)},
		{"twice", []Record{SessionRecord(bootA), {RecordIntent, bm(2)}, only, only}, whole(nil, 2)},
	}
	_, ckpt, _ := session(t, Config{RegionSize: 1 << 20}, 16<<20, bootA)
	for _, tc := range tests {
		if got := replay(t, ckpt, bootA, tc.recs); !got.Equals(tc.want) {
			t.Errorf("%s: recovered %v, want %v", tc.name, got.ToArray(), tc.want.ToArray())
		}
	}
}

// A crash may come between any two records, also after the journal's
// reserve ran short in the middle of the writes: a process crash (same
// boot, every appended record) and a power loss (another boot, synced
// records) both miss no acknowledged write.
func TestCrashAtAnyRecordRegionsOnly(t *testing.T) {
	const size = 1 << 30
	rng := rand.New(rand.NewPCG(3, 4))
	tr, ckpt, log := session(t, Config{RegionSize: 64 << 20}, size, bootA)
	var writes []write
	var acks []int // records appended when each write was acknowledged
	for i := range 400 {
		if i == 150 {
			log.blocksFail = ErrRegionsOnly
		}
		w := write{rng.Int64N(size/4096) * 4096, rng.Int64N(16)*4096 + 4096}
		mustMark(t, tr, w.off, w.n)
		n, _ := log.state()
		writes, acks = append(writes, w), append(acks, n)
	}
	if !slices.Contains(types(log.recs), RecordRegionsOnly) {
		t.Fatal("no RecordRegionsOnly logged")
	}
	_, synced := log.state()
	for k := 1; k <= len(log.recs); k++ {
		sameBoot := replay(t, ckpt, bootA, log.recs[:k])
		rebooted := replay(t, ckpt, bootB, log.recs[:min(k, synced)])
		for i, w := range writes {
			if acks[i] > k {
				break
			}
			f0, f1 := span(w.off, w.n, DefaultGranularity)
			for f := f0; f < f1; f++ {
				if !sameBoot.Contains(uint32(f)) || !rebooted.Contains(uint32(f)) {
					t.Fatalf("crash after record %d: write %d (block %d) missed", k, i, f)
				}
			}
		}
	}
}

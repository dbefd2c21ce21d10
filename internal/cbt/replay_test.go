package cbt

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

const (
	bootA = "0f4e2a9c-1111-4c3e-9a8e-6b7d2f3a4b5c"
	bootB = "7c1d3e5f-2222-4d6a-8b9c-0e1f2a3b4c5d"
)

type write struct{ off, n int64 }

// session starts a tracker on a fresh checkpoint, as a disk does at open:
// the checkpoint bytes and a log holding the session record.
func session(t *testing.T, cfg Config, size int64, boot string) (*Tracker, []byte, *memLog) {
	t.Helper()
	log := &memLog{recs: []Record{SessionRecord(boot)}}
	tr, err := New(cfg, NewUUID(), size, log)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := tr.Encode(false)
	tr.Committed(false)
	return tr, ckpt, log
}

// replay opens ckpt and replays recs under boot, as a disk does after a
// crash; it returns the open epoch.
func replay(t *testing.T, ckpt []byte, boot string, recs []Record) *roaring.Bitmap {
	t.Helper()
	re, err := Decode("ckpt", ckpt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := re.Replay(boot, recs); err != nil {
		t.Fatal(err)
	}
	return re.mu.cur
}

// Block records are trusted only under the boot ID of their session: the
// same boot (a process crash) recovers exactly the written blocks; another
// boot (a power loss), an unknown one, or a journal without session
// records (an older version's) falls back to the durable regions.
func TestReplayTrustsBlocksOnlyUnderSameBoot(t *testing.T) {
	tr, ckpt, log := session(t, Config{RegionSize: 1 << 20}, 16<<20, bootA)
	tr.Mark(3<<20+5, 10)       // region 3, block 48
	tr.Mark(9<<20, 1)          // region 9, block 144
	tr.Mark(9<<20+64*kib, 512) // region 9, block 145
	exact := roaring.BitmapOf(48, 144, 145)
	regions := roaring.New()
	regions.AddRange(48, 64)
	regions.AddRange(144, 160)
	tests := []struct {
		name string
		boot string
		recs []Record
		want *roaring.Bitmap
	}{
		{"same boot", bootA, log.recs, exact},
		{"rebooted", bootB, log.recs, regions},
		{"boot unknown now", "", log.recs, regions},
		{"no session record", bootA, log.recs[1:], regions},
		{"session of an unknown boot", "", append([]Record{SessionRecord("")}, log.recs[1:]...), regions},
	}
	for _, tc := range tests {
		if got := replay(t, ckpt, tc.boot, tc.recs); !got.Equals(tc.want) {
			t.Errorf("%s: recovered %v, want %v", tc.name, got.ToArray(), tc.want.ToArray())
		}
	}
	if s := log.syncs.Load(); s != 2 {
		t.Errorf("%d syncs for writes to 2 regions", s)
	}
}

// A journal continued by a second process holds two sessions: each
// segment is judged by its own boot ID.
func TestReplaySegments(t *testing.T) {
	tr, ckpt, log := session(t, Config{RegionSize: 1 << 20}, 16<<20, bootB)
	tr.Mark(0, 1) // block 0, region 0: written before the reboot
	tr2, err := Decode("ckpt", ckpt, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr2.log = log
	log.recs = append(log.recs, SessionRecord(bootA))
	tr2.Mark(5<<20, 1) // block 80, region 5: written in this boot
	got := replay(t, ckpt, bootA, log.recs)
	want := roaring.BitmapOf(80)
	want.AddRange(0, 16)
	if !got.Equals(want) {
		t.Fatalf("recovered %v, want region 0 whole and block 80", got.ToArray())
	}
}

// Blocks already in the checkpoint's open epoch need no record: a crash
// recovers them from the checkpoint. After a snapshot closes the epoch
// they are logged again.
func TestRewriteAfterCheckpoint(t *testing.T) {
	log := &memLog{}
	tr := newTracker(t, log)
	tr.Mark(0, 256*kib)
	tr.Encode(false)
	tr.Committed(false)
	before := log.calls.Load()
	tr.Mark(64*kib, 4*kib)
	if log.calls.Load() != before {
		t.Fatal("rewrite of a checkpointed block logged again")
	}
	tr.Encode(true)
	tr.Committed(true)
	tr.Mark(64*kib, 4*kib)
	if log.calls.Load() != before+1 {
		t.Fatal("first write after a snapshot logged nothing")
	}
}

// A crash may come between any two records. Under the same boot (a
// process crash: every appended record survives) replay must report each
// block whose Mark had returned and, besides, only the blocks of the one
// write in flight; after a reboot (a power loss: only synced records
// survive) it must still report every acknowledged block.
func TestCrashAtAnyRecord(t *testing.T) {
	const size = 1 << 30
	rng := rand.New(rand.NewPCG(1, 2))
	scattered := func(n int, maxLen int64) []write {
		var ws []write
		for range n {
			ws = append(ws, write{rng.Int64N(size/4096) * 4096, rng.Int64N(maxLen/4096)*4096 + 4096})
		}
		return ws
	}
	var seq []write
	for i := int64(0); i < 300; i++ {
		seq = append(seq, write{i << 20, 1 << 20})
	}
	tests := []struct {
		name   string
		cfg    Config
		writes []write
	}{
		{"scattered small", Config{}, scattered(300, 64<<10)},
		{"random 4k", Config{}, scattered(1000, 4096)},
		{"sequential 1m", Config{}, seq},
		{"small regions", Config{RegionSize: 1 << 20}, scattered(300, 256<<10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, ckpt, log := session(t, tc.cfg, size, bootA)
			g := tr.Config().Granularity
			type ack struct{ appended, synced int }
			var acks []ack
			for _, w := range tc.writes {
				if err := tr.Mark(w.off, w.n); err != nil {
					t.Fatal(err)
				}
				n, s := log.state()
				acks = append(acks, ack{n, s})
			}
			marked := roaring.New() // blocks of writes acknowledged so far
			prev := ack{1, 0}
			for i, w := range tc.writes {
				f0, f1 := span(w.off, w.n, g)
				inflight := uint64(f1 - f0)
				for k := prev.appended; k <= acks[i].appended; k++ {
					got := replay(t, ckpt, bootA, log.recs[:k])
					if miss := roaring.AndNot(marked, got); !miss.IsEmpty() {
						t.Fatalf("kill after record %d: blocks %v missed", k, miss.ToArray()[:min(5, miss.GetCardinality())])
					}
					if over := roaring.AndNot(got, marked).GetCardinality(); over > inflight {
						t.Fatalf("kill after record %d: %d blocks over-reported, %d in flight", k, over, inflight)
					}
				}
				marked.AddRange(f0, f1)
				if i%17 == 0 || i == len(tc.writes)-1 {
					got := replay(t, ckpt, bootB, log.recs[:acks[i].synced])
					if miss := roaring.AndNot(marked, got); !miss.IsEmpty() {
						t.Fatalf("power loss after write %d: blocks %v missed", i, miss.ToArray()[:min(5, miss.GetCardinality())])
					}
				}
				prev = acks[i]
			}
			t.Logf("%d writes, %d records, %d syncs", len(tc.writes), len(log.recs), log.syncs.Load())
		})
	}
}

// Concurrent writers share appends and syncs, and a process crash after
// any record still loses nothing acknowledged.
func TestConcurrentWritersAnyPrefix(t *testing.T) {
	tr, ckpt, log := session(t, Config{}, 1<<30, bootA)
	type ack struct {
		w        write
		appended int
	}
	var mu sync.Mutex
	var all []ack
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 100 {
				w := write{r.Int64N(1<<30/4096) * 4096, 4096}
				if err := tr.Mark(w.off, w.n); err != nil {
					t.Error(err)
					return
				}
				n, _ := log.state()
				mu.Lock()
				all = append(all, ack{w, n})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if s := log.syncs.Load(); s > 4 {
		t.Errorf("%d syncs for 4 regions", s)
	}
	for k := 1; k <= len(log.recs); k += max(1, len(log.recs)/60) {
		got := replay(t, ckpt, bootA, log.recs[:k])
		for _, a := range all {
			if a.appended <= k && !got.Contains(uint32(a.w.off/DefaultGranularity)) {
				t.Fatalf("kill after record %d missed write at %d", k, a.w.off)
			}
		}
		if n := got.GetCardinality(); n > 800 {
			t.Fatalf("kill after record %d: %d blocks for 800 writes", k, n)
		}
	}
}

// Regions of a version-1 journal count whole, clipped to the disk.
func TestReplayVersion1Regions(t *testing.T) {
	tr := newTracker(t, &memLog{})
	recs := []Record{{RecordIntent, EncodeBitmap(roaring.BitmapOf(3, 15, 99))}}
	n, err := tr.Replay(bootA, recs)
	if err != nil || n != 32 { // region 99 lies past the 16 MiB disk
		t.Fatalf("recovered %d blocks, %v", n, err)
	}
	if !tr.mu.cur.Contains(48) || !tr.mu.cur.Contains(255) || tr.mu.cur.Contains(256) {
		t.Fatalf("recovered %v", tr.mu.cur.ToArray())
	}
}

func TestReplayRejects(t *testing.T) {
	good := EncodeBitmap(roaring.BitmapOf(1))
	tests := []struct {
		name string
		recs []Record
	}{
		{"long session", []Record{{RecordSession, make([]byte, MaxBootID+1)}}},
		{"unknown type", []Record{{0x1f, good}}},
		{"bad bitmap", []Record{SessionRecord(bootA), {RecordBlocks, good[:3]}}},
		{"bad untrusted bitmap", []Record{{RecordBlocks, []byte{1, 2}}}},
		{"regions-only with a payload", []Record{SessionRecord(bootA), {RecordRegionsOnly, []byte{0}}}},
	}
	for _, tc := range tests {
		tr := newTracker(t, &memLog{})
		if _, err := tr.Replay(bootA, tc.recs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func FuzzReplay(f *testing.F) {
	f.Add(byte(RecordBlocks), EncodeBitmap(roaring.BitmapOf(1, 1<<32-1)), true)
	f.Add(byte(RecordIntent), EncodeBitmap(roaring.BitmapOf(7, 1<<32-1)), false)
	f.Add(byte(RecordFine), []byte{0x3b, 0x30, 0, 0, 1, 0}, true)
	f.Add(byte(RecordRegionsOnly), []byte{}, true)
	f.Add(byte(RecordRegionsOnly), []byte{1}, false)
	f.Fuzz(func(t *testing.T, typ byte, b []byte, trusted bool) {
		tr, _ := New(Config{}, "a", 1<<30, nil)
		recs := []Record{{typ, b}}
		if trusted {
			recs = append([]Record{SessionRecord(bootA)}, recs...)
		}
		if n, _ := tr.Replay(bootA, recs); n > 1<<30/DefaultGranularity {
			t.Fatal("recovered blocks past the disk")
		}
	})
}

package cbt

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memLog is a journal in memory: recs as a process sees them (the page
// cache), recs[:synced] what survives a power loss.
type memLog struct {
	mu     sync.Mutex
	recs   []Record
	synced int
	calls  atomic.Int64
	syncs  atomic.Int64
	delay  time.Duration
	fail   error
	// blocksFail, if set, is returned (nothing logged) for records that
	// hold a RecordBlocks: a journal whose reserve ran short.
	blocksFail error
}

func (l *memLog) LogIntent(recs []Record, sync bool) error {
	l.calls.Add(1)
	time.Sleep(l.delay)
	if l.fail != nil {
		return l.fail
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		if r.Type == RecordBlocks && l.blocksFail != nil {
			return l.blocksFail
		}
	}
	l.recs = append(l.recs, recs...)
	if sync {
		l.syncs.Add(1)
		l.synced = len(l.recs)
	}
	return nil
}

// state is how many records are appended and synced.
func (l *memLog) state() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs), l.synced
}

const kib = 1024

func newTracker(t *testing.T, log IntentLog) *Tracker {
	t.Helper()
	tr, err := New(Config{Granularity: 64 * kib, RegionSize: 1 << 20, Retain: 3}, NewUUID(), 16<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func blocks(t *testing.T, tr *Tracker, since ID, until uint64) []uint32 {
	t.Helper()
	bm, err := tr.Changed(since, until)
	if err != nil {
		t.Fatal(err)
	}
	return bm.ToArray()
}

func TestEpochsAndChangeIDs(t *testing.T) {
	tr := newTracker(t, &memLog{})
	start := tr.Current()
	tr.Mark(0, 512)     // block 0
	tr.Mark(130*kib, 1) // block 2
	tr.Encode(true)     // snapshot 1
	tr.Committed(true)
	s1 := tr.Current()
	tr.Mark(64*kib, 64*kib) // block 1
	tr.Encode(true)
	tr.Committed(true)
	s2 := tr.Current()

	if got := blocks(t, tr, start, s2.Seq); len(got) != 3 {
		t.Fatalf("since start: %v", got)
	}
	if got := blocks(t, tr, s1, s2.Seq); len(got) != 1 || got[0] != 1 {
		t.Fatalf("since s1: %v", got)
	}
	if got := blocks(t, tr, start, s1.Seq); len(got) != 2 {
		t.Fatalf("start..s1: %v", got)
	}
	if got := blocks(t, tr, s2, s2.Seq); len(got) != 0 {
		t.Fatalf("s2..s2: %v", got)
	}
	bad := []struct {
		name string
		id   ID
	}{
		{"foreign", ID{NewUUID(), 1}},
		{"future", ID{s2.UUID, s2.Seq + 1}},
	}
	for _, b := range bad {
		if _, err := tr.Changed(b.id, s2.Seq); !errors.Is(err, ErrChangeIDInvalid) {
			t.Errorf("%s: %v", b.name, err)
		}
	}
	for _, s := range []string{"", "x", "abc/", "abc/-1", "/3"} {
		if _, err := tr.Check(s, s2.Seq); !errors.Is(err, ErrChangeIDInvalid) {
			t.Errorf("parse %q: %v", s, err)
		}
	}
}

func TestRetainExpiresOldIDs(t *testing.T) {
	tr := newTracker(t, &memLog{})
	first := tr.Current()
	for i := 0; i < 5; i++ {
		tr.Mark(int64(i)*64*kib, 1)
		tr.Encode(true)
		tr.Committed(true)
	}
	if _, err := tr.Changed(first, tr.Current().Seq); !errors.Is(err, ErrChangeIDInvalid) {
		t.Fatalf("expired ID answered: %v", err)
	}
	ids := tr.Since(tr.Current().Seq)
	if len(ids) != 4 { // base and the 3 retained epochs
		t.Fatalf("since list %v", ids)
	}
	if got := blocks(t, tr, ids[0], tr.Current().Seq); len(got) != 3 {
		t.Fatalf("oldest valid: %v", got)
	}
}

func TestGroupCommitSharesSyncs(t *testing.T) {
	log := &memLog{delay: 5 * time.Millisecond}
	tr, _ := New(Config{Granularity: 64 * kib, RegionSize: 64 * kib}, NewUUID(), 64<<20, log)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tr.Mark(int64(i)*64*kib, 4*kib); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if c := log.syncs.Load(); c >= 64 || c < 1 {
		t.Fatalf("%d log syncs for 64 concurrent first writes", c)
	}
	before := log.calls.Load()
	tr.Mark(0, 4*kib) // block logged, region durable: nothing to log
	if log.calls.Load() != before {
		t.Fatal("rewrite of a logged block logged again")
	}
	if n := tr.Stats().IntentRegions; n != 64 {
		t.Fatalf("%d intent regions", n)
	}
}

func TestIntentFailureIsSticky(t *testing.T) {
	log := &memLog{fail: errors.New("disk gone")}
	tr := newTracker(t, log)
	if err := tr.Mark(0, 1); !errors.Is(err, ErrFailed) {
		t.Fatalf("got %v", err)
	}
	log.fail = nil
	if err := tr.Mark(5<<20, 1); !errors.Is(err, ErrFailed) {
		t.Fatalf("after failure: %v", err)
	}
}

// A log that is full logged nothing: the writers waiting fail with the
// file system's error, the tracker stays usable, and the next write to
// the region logs its intent once there is room.
func TestIntentNoSpaceIsNotSticky(t *testing.T) {
	log := &memLog{fail: fmt.Errorf("write journal: %w", syscall.ENOSPC)}
	tr := newTracker(t, log)
	if err := tr.Mark(0, 1); !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrFailed) {
		t.Fatalf("intent on a full log: %v, want ENOSPC and not ErrFailed", err)
	}
	if n := tr.Stats().IntentRegions; n != 0 {
		t.Fatalf("%d intent regions after a failed log", n)
	}
	log.fail = nil
	if err := tr.Mark(0, 1); err != nil {
		t.Fatalf("after space was freed: %v", err)
	}
	if n := tr.Stats().IntentRegions; n != 1 {
		t.Fatalf("%d intent regions after the retry, want 1", n)
	}
	if len(log.recs) != 2 || log.recs[0].Type != RecordBlocks || log.recs[1].Type != RecordIntent {
		t.Fatalf("records after the retry: %v", log.recs)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	tr := newTracker(t, &memLog{})
	tr.Mark(0, 1)
	tr.Encode(true)
	tr.Committed(true)
	tr.Mark(1<<20, 1)
	data := tr.Encode(false)
	re, err := Decode("x", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if re.Current() != tr.Current() || re.Stats().DirtyBlocks != tr.Stats().DirtyBlocks {
		t.Fatalf("round trip: %+v vs %+v", re.Stats(), tr.Stats())
	}
	data[len(data)-1] ^= 0xff
	if _, err := Decode("x", data, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged: %v", err)
	}
}

func TestGrowAndReset(t *testing.T) {
	tr := newTracker(t, &memLog{})
	start := tr.Current()
	tr.Grow(17 << 20)
	tr.Encode(true)
	tr.Committed(true)
	if got := blocks(t, tr, start, tr.Current().Seq); len(got) != 16 || got[0] != 256 {
		t.Fatalf("grown area: %v", got)
	}
	old := tr.Current()
	tr.Reset()
	if _, err := tr.Changed(old, tr.Current().Seq); !errors.Is(err, ErrChangeIDInvalid) {
		t.Fatalf("pre-reset ID: %v", err)
	}
	fresh := tr.Current()
	tr.Encode(true)
	tr.Committed(true)
	if got := blocks(t, tr, fresh, tr.Current().Seq); len(got) != 272 {
		t.Fatalf("after reset all blocks count as changed, got %d", len(got))
	}
}

func FuzzDecode(f *testing.F) {
	tr, _ := New(Config{}, NewUUID(), 1<<30, LogFunc(func([]Record, bool) error { return nil }))
	tr.Mark(0, 1<<20)
	f.Add(tr.Encode(true))
	f.Add(tr.Encode(false))
	f.Fuzz(func(t *testing.T, b []byte) {
		if re, err := Decode("f", b, nil); err == nil {
			re.Stats()
			re.Replay("", nil)
		}
	})
}

package cbt

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/RoaringBitmap/roaring/v2"
)

// Mark records that [off, off+length) is being written. It returns only
// when the caller may issue the data write: every block of it not already
// in the checkpoint is named by a RecordBlocks appended to the journal
// (not synced: a process crash keeps it, the page cache holds it), and its
// region by a RecordIntent made durable (a power loss keeps it). A crash
// after the data reaches the disk thus always finds the change
// (docs/format.md invariants 1 and 1a). Writers that need the same commit
// share one append, and one sync when a region is new.
//
// When the journal has no room for a block record (it returns ENOSPC or
// ErrRegionsOnly), the commit logs a RecordRegionsOnly with its regions
// instead, and until the next checkpoint Mark logs regions only, as
// before block records existed: overwrites in recorded regions of a full
// file system then need no journal space. Recovery counts the regions of
// that session whole. If even that does not fit, the writers get ENOSPC.
func (t *Tracker) Mark(off, length int64) error {
	if length <= 0 {
		return nil
	}
	f0, f1 := span(off, length, t.cfg.Granularity)
	t.mu.Lock()
	if t.mu.err != nil {
		t.mu.Unlock()
		return t.mu.err
	}
	AddRange(t.mu.cur, f0, f1)
	wait, lead := t.needIntents(f0, f1)
	t.mu.Unlock()
	if wait == nil {
		return nil
	}
	if lead {
		t.commitLoop()
	}
	<-wait.done
	return wait.err
}

// needIntents queues the records blocks [f0, f1) lack and returns the
// batch to wait for (nil: nothing lacking) and whether the caller must run
// the commit loop. Called with mu held.
func (t *Tracker) needIntents(f0, f1 uint64) (*batch, bool) {
	per := uint64(t.cfg.RegionSize / t.cfg.Granularity)
	var wait *batch
	need := func(done, inflight, pending *roaring.Bitmap, x uint32) {
		switch {
		case done.Contains(x):
		case inflight.Contains(x):
			if wait == nil {
				wait = t.mu.current
			}
		default:
			pending.Add(x)
			if t.mu.next == nil {
				t.mu.next = &batch{done: make(chan struct{})}
			}
			wait = t.mu.next // commits after current: waiting on it covers both
		}
	}
	for f := f0; f < f1; f++ {
		if t.mu.saved.Contains(uint32(f)) {
			continue
		}
		if !t.mu.coarse {
			need(t.mu.logged, t.mu.inflight.blocks, t.mu.pending.blocks, uint32(f))
		}
		need(t.mu.intent, t.mu.inflight.regions, t.mu.pending.regions, uint32(f/per))
	}
	if wait == nil || t.mu.committing {
		return wait, false
	}
	t.mu.committing = true
	return wait, true
}

// commitLoop commits batches until none is queued. Exactly one goroutine
// runs it at a time.
func (t *Tracker) commitLoop() {
	for {
		t.mu.Lock()
		b := t.mu.next
		if b == nil {
			t.mu.committing = false
			t.mu.current = nil
			t.mu.Unlock()
			return
		}
		p := t.mu.pending
		t.mu.pending, t.mu.next, t.mu.current = newIntents(), nil, b
		t.mu.inflight = p
		coarse := t.mu.coarse
		// Encoded under mu: encoding run-optimizes the bitmaps in place,
		// and needIntents reads the in-flight ones under mu.
		recs, sync := p.records(coarse)
		t.mu.Unlock()

		coarse, err := t.commit(p, recs, sync, coarse)

		t.mu.Lock()
		if err != nil && t.mu.err == nil && !noSpace(err) {
			t.mu.err = fmt.Errorf("%w: %v", ErrFailed, err)
		}
		if err == nil {
			if !coarse {
				t.mu.logged.Or(p.blocks)
			}
			t.mu.coarse = coarse
			t.mu.intent.Or(p.regions)
		}
		b.err = t.mu.err
		if b.err == nil {
			b.err = err // no space: these writers fail, later ones retry
		}
		t.mu.inflight = newIntents()
		t.mu.Unlock()
		close(b.done)
	}
}

// commit logs recs, the records of p (block records too unless coarse).
// If the log has no room for block records, it logs a RecordRegionsOnly
// and the regions instead, and reports that the session is coarse from
// now on.
func (t *Tracker) commit(p intents, recs []Record, sync, coarse bool) (bool, error) {
	if len(recs) == 0 { // blocks queued before the session turned coarse
		return coarse, nil
	}
	err := t.log.LogIntent(recs, sync)
	if coarse || p.blocks.IsEmpty() || !(noSpace(err) || errors.Is(err, ErrRegionsOnly)) {
		return coarse, err
	}
	t.mu.Lock() // see commitLoop
	recs, sync = p.records(true)
	t.mu.Unlock()
	recs = append([]Record{{RecordRegionsOnly, nil}}, recs...)
	if err := t.log.LogIntent(recs, sync); err != nil {
		return false, err
	}
	return true, nil
}

// records are the journal records of a commit, block records unless
// coarse, and whether they must be synced: only a new region needs to
// survive a power loss.
func (in intents) records(coarse bool) ([]Record, bool) {
	var recs []Record
	if !coarse && !in.blocks.IsEmpty() {
		recs = append(recs, Record{RecordBlocks, EncodeBitmap(in.blocks)})
	}
	if !in.regions.IsEmpty() {
		recs = append(recs, Record{RecordIntent, EncodeBitmap(in.regions)})
	}
	return recs, !in.regions.IsEmpty()
}

// LogFunc adapts a function to IntentLog.
type LogFunc func(recs []Record, sync bool) error

var _ IntentLog = LogFunc(nil)

// LogIntent calls f.
func (f LogFunc) LogIntent(recs []Record, sync bool) error { return f(recs, sync) }

// noSpace reports a log that was full: by IntentLog's contract nothing was
// logged, so the tracker stays usable and a later Mark logs the records
// again (once space is freed) instead of failing every write for good.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

package cbt

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/RoaringBitmap/roaring/v2"
)

// Mark records that [off, off+length) is being written. It returns only
// when the change is durable as an intent, so the caller may then issue
// the data write: a crash after the data reaches the disk always finds the
// change. Writers that need the same commit share one log sync.
func (t *Tracker) Mark(off, length int64) error {
	if length <= 0 {
		return nil
	}
	f0, f1 := span(off, length, t.cfg.Granularity)
	r0, r1 := span(off, length, t.cfg.RegionSize)
	t.mu.Lock()
	if t.mu.err != nil {
		t.mu.Unlock()
		return t.mu.err
	}
	t.mu.cur.AddRange(f0, f1)
	wait, lead := t.needIntents(r0, r1)
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

// needIntents queues regions [r0, r1) that are not durable and returns the
// batch to wait for (nil: all durable) and whether the caller must run
// the commit loop. Called with mu held.
func (t *Tracker) needIntents(r0, r1 uint64) (*batch, bool) {
	var wait *batch
	for r := r0; r < r1; r++ {
		switch {
		case t.mu.intent.Contains(uint32(r)):
		case t.mu.inflight.Contains(uint32(r)) && wait == nil:
			wait = t.mu.current
		default:
			t.mu.pending.Add(uint32(r))
			if t.mu.next == nil {
				t.mu.next = &batch{done: make(chan struct{})}
			}
			wait = t.mu.next // commits after current: waiting on it covers both
		}
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
		regions := t.mu.pending
		t.mu.pending, t.mu.next, t.mu.current = roaring.New(), nil, b
		t.mu.inflight = regions
		t.mu.Unlock()

		err := t.log.LogIntent(EncodeBitmap(regions))

		t.mu.Lock()
		if err != nil && t.mu.err == nil && !noSpace(err) {
			t.mu.err = fmt.Errorf("%w: %v", ErrFailed, err)
		}
		if err == nil {
			t.mu.intent.Or(regions)
		}
		b.err = t.mu.err
		if b.err == nil {
			b.err = err // no space: these writers fail, later ones retry
		}
		t.mu.inflight = roaring.New()
		t.mu.Unlock()
		close(b.done)
	}
}

// LogIntent adapts a function to IntentLog.
type LogFunc func(payload []byte) error

var _ IntentLog = LogFunc(nil)

// LogIntent calls f.
func (f LogFunc) LogIntent(p []byte) error { return f(p) }

// noSpace reports a log that was full: by IntentLog's contract nothing was
// logged, so the tracker stays usable and a later Mark logs the regions
// again (once space is freed) instead of failing every write for good.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

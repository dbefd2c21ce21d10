package cbt

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"
)

// NewUUID returns a random 128-bit identity in hex.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Check validates since as a change ID answerable up to sequence until.
func (t *Tracker) Check(since string, until uint64) (ID, error) {
	id, err := ParseID(since)
	if err != nil {
		return ID{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return id, t.checkLocked(id, until)
}

func (t *Tracker) checkLocked(id ID, until uint64) error {
	switch {
	case id.UUID != t.mu.uuid:
		return fmt.Errorf("%w: %s belongs to another disk or to before a CBT reset (tracking identity is %s)", ErrChangeIDInvalid, id, t.mu.uuid)
	case id.Seq < t.mu.base:
		return fmt.Errorf("%w: %s has expired (oldest kept is %s/%d)", ErrChangeIDInvalid, id, t.mu.uuid, t.mu.base)
	case id.Seq > until:
		return fmt.Errorf("%w: %s is newer than the state queried (%s/%d)", ErrChangeIDInvalid, id, t.mu.uuid, until)
	}
	return nil
}

// Changed returns the blocks written after change ID since and before
// change ID until was taken (until ≤ Current().Seq). The bitmap is shared:
// callers MUST NOT modify it. A caller paging through one answer asks the
// same question again and again, so the last union is kept.
func (t *Tracker) Changed(since ID, until uint64) (*roaring.Bitmap, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkLocked(since, until); err != nil {
		return nil, err
	}
	if until > t.mu.seq {
		return nil, fmt.Errorf("%w: sequence %d is not closed", ErrChangeIDInvalid, until)
	}
	key := unionKey{since, until}
	if t.mu.union.key == key && t.mu.union.bm != nil {
		return t.mu.union.bm, nil
	}
	var parts []*roaring.Bitmap
	for _, e := range t.mu.closed {
		if e.seq > since.Seq && e.seq <= until {
			parts = append(parts, e.bm)
		}
	}
	bm := roaring.New()
	switch len(parts) {
	case 0:
	case 1:
		bm = parts[0] // closed epochs never change
	default:
		bm = roaring.FastOr(parts...)
	}
	t.mu.union.key, t.mu.union.bm = key, bm
	return bm, nil
}

// unionKey names an answer of Changed; the UUID in since makes answers of
// before a Reset differ from those after it.
type unionKey struct {
	since ID
	until uint64
}

// Since lists the change IDs answerable as "since" for state until.
func (t *Tracker) Since(until uint64) []ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []ID
	for s := t.mu.base; s <= until && s <= t.mu.seq; s++ {
		ids = append(ids, ID{t.mu.uuid, s})
	}
	return ids
}

// Grow extends the tracked disk; the new area counts as changed so every
// earlier change ID reports it.
func (t *Tracker) Grow(size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if size <= t.mu.size {
		return
	}
	f0 := uint64(t.mu.size / t.cfg.Granularity)
	f1 := uint64((size + t.cfg.Granularity - 1) / t.cfg.Granularity)
	t.mu.cur.AddRange(f0, f1)
	t.mu.size = size
}

// Reset gives the tracker a new identity: every earlier change ID becomes
// invalid, and the whole disk counts as changed in the new first epoch.
// Sequences keep counting up so they stay ordered with snapshots'.
func (t *Tracker) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.uuid = NewUUID()
	t.mu.base, t.mu.closed = t.mu.seq, nil
	t.mu.cur = roaring.New()
	t.mu.cur.AddRange(0, uint64((t.mu.size+t.cfg.Granularity-1)/t.cfg.Granularity))
}

// Stats describe the tracker.
type Stats struct {
	UUID          string
	Current       ID
	Oldest        ID
	Granularity   int64
	DirtyBlocks   uint64 // in the open epoch
	Epochs        int
	IntentRegions uint64
	BitmapBytes   uint64
}

// Stats reports the tracker's state.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Stats{
		UUID: t.mu.uuid, Current: ID{t.mu.uuid, t.mu.seq}, Oldest: ID{t.mu.uuid, t.mu.base},
		Granularity: t.cfg.Granularity, DirtyBlocks: t.mu.cur.GetCardinality(),
		Epochs: len(t.mu.closed), IntentRegions: t.mu.intent.GetCardinality(),
		BitmapBytes: t.mu.cur.GetSizeInBytes(),
	}
	for _, e := range t.mu.closed {
		s.BitmapBytes += e.bm.GetSizeInBytes()
	}
	return s
}

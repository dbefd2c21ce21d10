package disk

import (
	"fmt"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Extent is a run of a view: data, or zero (unallocated, reads as zeroes).
type Extent struct {
	Off, Len int64
	Zero     bool
}

// extents maps [off, off+n) of a chain to data and zero runs, merged.
// Caller holds the shared barrier.
func (d *Disk) extents(chain []*layer, off, n int64) ([]Extent, error) {
	var out []Extent
	add := func(a, b int64, zero bool) {
		if k := len(out); k > 0 && out[k-1].Zero == zero && out[k-1].Off+out[k-1].Len == a {
			out[k-1].Len += b - a
			return
		}
		out = append(out, Extent{a, b - a, zero})
	}
	end := off + n
	g0, g1 := d.grains(off, n)
	for _, r := range resolve(chain, g0, g1) {
		a, b := max(off, int64(r.g0)*d.grain), min(end, int64(r.g1)*d.grain)
		if r.src > 0 || r.st == zeroed {
			add(a, b, r.st == zeroed)
			continue
		}
		fe, err := vfs.Extents(chain[0].f, a, b-a)
		if err != nil {
			return nil, err
		}
		for _, e := range fe {
			add(e.Off, e.Off+e.Len, !e.Data)
		}
	}
	return out, nil
}

// Extents reports the live disk's allocation over [off, off+n).
func (d *Disk) Extents(off, n int64) ([]Extent, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	if err := checkRange(off, n, d.size); err != nil {
		return nil, err
	}
	return d.extents(d.chain, off, n)
}

// Extents reports the snapshot's allocation over [off, off+n).
func (s *Snapshot) Extents(off, n int64) ([]Extent, error) {
	s.d.barrier.RLock()
	defer s.d.barrier.RUnlock()
	chain, sm, err := s.chainLocked()
	if err != nil {
		return nil, err
	}
	if err := checkRange(off, n, sm.Size); err != nil {
		return nil, err
	}
	return s.d.extents(chain, off, n)
}

// Area is one changed extent.
type Area struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
}

// ChangedAreas is VMware's DiskChangeInfo: the areas changed within
// [StartOffset, StartOffset+Length). A caller pages by asking again from
// StartOffset+Length until it reaches the disk's size.
type ChangedAreas struct {
	StartOffset int64  `json:"startOffset"`
	Length      int64  `json:"length"`
	ChangedArea []Area `json:"changedArea"`
}

// MaxAreas bounds the areas of one ChangedAreas page.
const MaxAreas = 10000

// ChangedAreas is QueryChangedDiskAreas: the areas of the snapshot written
// after changeID, from startOffset. changeID "*" lists every allocated
// area (holes and zeroed grains skipped) for a first, full backup. An
// unknown, foreign or expired change ID is ErrChangeIDInvalid.
func (s *Snapshot) ChangedAreas(startOffset int64, changeID string) (*ChangedAreas, error) {
	s.d.barrier.RLock()
	defer s.d.barrier.RUnlock()
	chain, sm, err := s.chainLocked()
	if err != nil {
		return nil, err
	}
	if startOffset < 0 || startOffset > sm.Size {
		return nil, fmt.Errorf("%w: start offset %d, size %d", ErrOutOfRange, startOffset, sm.Size)
	}
	if changeID == cbt.Any {
		return s.d.allocatedAreas(chain, startOffset, sm.Size)
	}
	if s.d.tracker == nil {
		return nil, ErrCBTDisabled
	}
	if sm.ChangeUUID != s.d.tracker.UUID() {
		return nil, fmt.Errorf("%w: snapshot %s was taken before a CBT reset", ErrChangeIDInvalid, sm.ID)
	}
	id, err := s.d.tracker.Check(changeID, sm.ChangeSeq)
	if err != nil {
		return nil, err
	}
	bm, err := s.d.tracker.Changed(id, sm.ChangeSeq)
	if err != nil {
		return nil, err
	}
	res := &ChangedAreas{StartOffset: startOffset, ChangedArea: []Area{}}
	gran := s.d.tracker.Config().Granularity
	it := bm.Iterator()
	it.AdvanceIfNeeded(uint32(startOffset / gran))
	for it.HasNext() {
		a := max(int64(it.Next())*gran, startOffset)
		if a >= sm.Size {
			break
		}
		b := min((a/gran+1)*gran, sm.Size)
		if res.add(a, b) {
			return res, nil
		}
	}
	res.Length = sm.Size - startOffset
	return res, nil
}

// add appends [a, b), merging with the previous area; it reports a full
// page, setting Length to end at the last area.
func (c *ChangedAreas) add(a, b int64) bool {
	if k := len(c.ChangedArea); k > 0 && c.ChangedArea[k-1].Start+c.ChangedArea[k-1].Length == a {
		c.ChangedArea[k-1].Length += b - a
		return false
	}
	if len(c.ChangedArea) == MaxAreas {
		c.Length = a - c.StartOffset
		return true
	}
	c.ChangedArea = append(c.ChangedArea, Area{a, b - a})
	return false
}

// allocatedAreas lists data extents from start, a page at a time.
func (d *Disk) allocatedAreas(chain []*layer, start, size int64) (*ChangedAreas, error) {
	res := &ChangedAreas{StartOffset: start, ChangedArea: []Area{}}
	const window = 64 << 30 // bounds the work of one resolve
	for off := start; off < size; off += window {
		ext, err := d.extents(chain, off, min(window, size-off))
		if err != nil {
			return nil, err
		}
		for _, e := range ext {
			if !e.Zero && res.add(e.Off, e.Off+e.Len) {
				return res, nil
			}
		}
	}
	res.Length = size - start
	return res, nil
}

// ChangeIDs lists the change IDs the snapshot can answer ChangedAreas for
// (besides "*"), oldest first.
func (s *Snapshot) ChangeIDs() []string {
	s.d.barrier.RLock()
	defer s.d.barrier.RUnlock()
	_, sm, err := s.chainLocked()
	if err != nil || s.d.tracker == nil || sm.ChangeUUID != s.d.tracker.UUID() {
		return nil
	}
	var out []string
	for _, id := range s.d.tracker.Since(sm.ChangeSeq) {
		out = append(out, id.String())
	}
	return out
}

package disk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/metafile"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Grain states in a delta layer.
const (
	absent  = 0
	present = 1
	zeroed  = 2
)

const (
	mapMagic   = "BWDMAP01"
	mapVersion = 1
	// recLayer is the journal record of a delta map change.
	recLayer byte = 0x01
	// recDrop is the journal record that ends a consolidation (merge.go).
	recDrop byte = 0x02
)

// layer is one file of a chain. The bottom layer has no maps.
type layer struct {
	id      uint64
	f       vfs.File
	flat    bool
	written atomic.Bool // data written since the last fsync

	mu struct {
		sync.RWMutex
		present, zero *roaring.Bitmap
		changed       *roaring.Bitmap // grains changed since the last journal record
		dirty         bool            // maps differ from the map file
	}
}

func newLayer(id uint64, f vfs.File, flat bool) *layer {
	l := &layer{id: id, f: f, flat: flat}
	l.mu.present, l.mu.zero, l.mu.changed = roaring.New(), roaring.New(), roaring.New()
	return l
}

// state of grain g; mu held (read).
func (l *layer) stateLocked(g uint32) int {
	if l.mu.present.Contains(g) {
		return present
	}
	if l.mu.zero.Contains(g) {
		return zeroed
	}
	return absent
}

func (l *layer) state(g uint32) int {
	if l.flat {
		return present
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.stateLocked(g)
}

// set moves grains [g0, g1) to state st.
func (l *layer) set(g0, g1 uint64, st int) {
	if l.flat || g0 >= g1 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case present:
		cbt.AddRange(l.mu.present, g0, g1)
		l.mu.zero.RemoveRange(g0, g1)
	case zeroed:
		cbt.AddRange(l.mu.zero, g0, g1)
		l.mu.present.RemoveRange(g0, g1)
	default:
		l.mu.zero.RemoveRange(g0, g1)
		l.mu.present.RemoveRange(g0, g1)
	}
	cbt.AddRange(l.mu.changed, g0, g1)
	l.mu.dirty = true
}

// nextSet is the first grain ≥ g that is present or zero, or -1.
func (l *layer) nextSetLocked(g uint32) int64 {
	a, b := l.mu.present.NextValue(g), l.mu.zero.NextValue(g)
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	}
	return min(a, b)
}

// runEnd is the end of the run of grains in state st starting at g.
func (l *layer) runEndLocked(g uint32, st int) int64 {
	bm := l.mu.present
	if st == zeroed {
		bm = l.mu.zero
	}
	return nextAbsent(bm, g)
}

// nextAbsent is the first value ≥ x not in bm. (roaring v2.30's
// NextAbsentValue drops the high 16 bits past the first container.) It
// gallops over the run with range cardinalities: O(log² run).
func nextAbsent(bm *roaring.Bitmap, x uint32) int64 {
	full := func(k uint64) bool { return bm.CardinalityInRange(uint64(x), uint64(x)+k) == k }
	if !full(1) {
		return int64(x)
	}
	lo, hi := uint64(1), uint64(2) // full(lo) holds
	for full(hi) {
		lo, hi = hi, hi*2
		if hi > 1<<33 {
			return -1
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if full(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return int64(x) + int64(lo)
}

// count of grains held (present or zero).
func (l *layer) held() uint64 {
	if l.flat {
		return 0
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.present.GetCardinality() + l.mu.zero.GetCardinality()
}

// takeRecord returns the journal record for grains changed since the last
// one, and those grains; ok is false when nothing changed.
func (l *layer) takeRecord() ([]byte, *roaring.Bitmap, bool) {
	if l.flat {
		return nil, nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.changed.IsEmpty() {
		return nil, nil, false
	}
	changed := l.mu.changed
	var w bytes.Buffer
	binary.Write(&w, binary.LittleEndian, l.id)
	cbt.AppendBitmap(&w, l.mu.changed)
	cbt.AppendBitmap(&w, roaring.And(l.mu.present, l.mu.changed))
	cbt.AppendBitmap(&w, roaring.And(l.mu.zero, l.mu.changed))
	l.mu.changed = roaring.New()
	return w.Bytes(), changed, true
}

// untake gives back grains of a record that could not be written: the
// next record covers them again, with their states as they are then.
func (l *layer) untake(changed *roaring.Bitmap) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.changed.Or(changed)
}

// takenRecord is a record taken for a flush, kept until it is written.
type takenRecord struct {
	l       *layer
	changed *roaring.Bitmap
}

// applyRecord replays a layer record on layers (by id).
func applyRecord(payload []byte, byID map[uint64]*layer) error {
	r := metafile.NewReader(payload)
	id := r.U64()
	bms, err := readBitmaps(r, 3)
	if err != nil || r.Rest() != 0 {
		return fmt.Errorf("%w: layer record malformed", ErrCorrupt)
	}
	l, ok := byID[id]
	if !ok || l.flat {
		return fmt.Errorf("%w: layer record for unknown layer %d", ErrCorrupt, id)
	}
	changed, pres, zero := bms[0], bms[1], bms[2]
	if pres.Intersects(zero) || roaring.AndNot(pres, changed).GetCardinality() > 0 || roaring.AndNot(zero, changed).GetCardinality() > 0 {
		return fmt.Errorf("%w: layer record with inconsistent grain states", ErrCorrupt)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.present.AndNot(changed)
	l.mu.present.Or(pres)
	l.mu.zero.AndNot(changed)
	l.mu.zero.Or(zero)
	l.mu.dirty = true
	return nil
}

// encodeMap serialises the maps for a map file.
func (l *layer) encodeMap(grain int64) []byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var w bytes.Buffer
	binary.Write(&w, binary.LittleEndian, uint64(grain))
	cbt.AppendBitmap(&w, l.mu.present)
	cbt.AppendBitmap(&w, l.mu.zero)
	return metafile.Encode(mapMagic, mapVersion, w.Bytes())
}

// decodeMap loads a map file into l.
func (l *layer) decodeMap(name string, grain int64, data []byte) error {
	_, body, err := metafile.Decode(name, mapMagic, mapVersion, data)
	if err != nil {
		return err
	}
	r := metafile.NewReader(body)
	g := r.U64()
	bms, err := readBitmaps(r, 2)
	if err != nil || r.Rest() != 0 || int64(g) != grain {
		return fmt.Errorf("%s: %w: map body malformed", name, ErrCorrupt)
	}
	if bms[0].Intersects(bms[1]) {
		return fmt.Errorf("%s: %w: grains both present and zero", name, ErrCorrupt)
	}
	l.mu.Lock()
	l.mu.present, l.mu.zero = bms[0], bms[1]
	l.mu.Unlock()
	return nil
}

func readBitmaps(r *metafile.Reader, n int) ([]*roaring.Bitmap, error) {
	out := make([]*roaring.Bitmap, n)
	for i := range out {
		bm, err := cbt.ReadBitmap(r)
		if err != nil {
			return nil, err
		}
		out[i] = bm
	}
	return out, nil
}

func (l *layer) dirtyMap() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.dirty
}

// changedSinceRecord reports grains changed since the last journal record.
func (l *layer) changedSinceRecord() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return !l.mu.changed.IsEmpty()
}

// clearChanges: the maps are now in a durable map file.
func (l *layer) clearChanges() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.changed = roaring.New()
	l.mu.dirty = false
}

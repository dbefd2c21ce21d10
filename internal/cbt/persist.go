package cbt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/blockwise/blockwise/internal/metafile"
)

// Checkpoint framing (metafile): magic "BWCBT001", version 1. Body, little
// endian:
//
//	uuid        [16]byte
//	granularity u64
//	regionSize  u64
//	retain      u32
//	size        u64   disk size in bytes
//	base        u64   oldest answerable since-sequence
//	seq         u64   current change ID sequence (last closed epoch)
//	nClosed     u32
//	nClosed × { seq u64, len u32, roaring bitmap [len] }
//	cur         { len u32, roaring bitmap }  the open epoch
//	intent      { len u32, roaring bitmap }  regions (empty in checkpoints
//	                                          written by this version)
const (
	ckptMagic   = "BWCBT001"
	ckptVersion = 1
)

// ErrCorrupt is metafile.ErrCorrupt.
var ErrCorrupt = metafile.ErrCorrupt

// smallRange: ranges up to this many values are added one by one.
const smallRange = 64

// AddRange adds [a, b) to bm. roaring's own AddRange (v2.30) gives an
// array container a new slice of the exact length on every call that
// adds a value, so marking a few blocks a write copied the whole
// container each time (3.3 KiB allocated a 4 KiB random write, 70% of
// the write path's allocations, in BenchmarkWrite/rand4k/flat/cbt);
// Add appends with amortized growth. Long ranges keep AddRange: one
// allocation for many values.
func AddRange(bm *roaring.Bitmap, a, b uint64) {
	if b-a > smallRange {
		bm.AddRange(a, b)
		return
	}
	for x := a; x < b; x++ {
		bm.Add(uint32(x))
	}
}

// EncodeBitmap serialises a bitmap in the portable roaring format. It
// never changes bm: callers encode maps under a read lock while other
// readers use them (the engine's checkpoint and linked clone beside the
// hash-tree builder), and RunOptimize rewrites containers in place, so
// the run encoding is applied to a copy.
func EncodeBitmap(bm *roaring.Bitmap) []byte {
	c := bm.Clone()
	c.RunOptimize()
	b, err := c.ToBytes()
	if err != nil {
		panic(err) // writing to memory cannot fail
	}
	return b
}

// DecodeBitmap parses untrusted bytes; the roaring decoder may panic on
// hostile input, which becomes an error here.
func DecodeBitmap(b []byte) (bm *roaring.Bitmap, err error) {
	defer func() {
		if r := recover(); r != nil {
			bm, err = nil, fmt.Errorf("%w: bitmap: %v", ErrCorrupt, r)
		}
	}()
	bm = roaring.New()
	n, err := bm.ReadFrom(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: bitmap: %v", ErrCorrupt, err)
	}
	if n != int64(len(b)) {
		return nil, fmt.Errorf("%w: bitmap: %d trailing bytes", ErrCorrupt, int64(len(b))-n)
	}
	if err := bm.Validate(); err != nil {
		return nil, fmt.Errorf("%w: bitmap: %v", ErrCorrupt, err)
	}
	return bm, nil
}

// Replay applies the tracker's records of the journal generation that
// follows its checkpoint, in journal order, and recovers: the open epoch
// gains every block that may have been written since the checkpoint. boot
// is the machine's boot ID now ("" if unknown). It returns how many blocks
// that added, the crash's over-report at most. Call it once, after Decode.
//
// Each RecordSession starts a segment. Under the boot ID that wrote it,
// the machine has not restarted since, so the page cache kept every
// RecordBlocks appended before a data write (invariant 1a): the segment's
// blocks are exact and its regions are not needed. Any other segment (a
// reboot or power loss since, an unknown boot ID, a journal of an older
// version) counts its durable regions whole (invariant 1), as do regions
// a version-1 checkpoint carried. So does a segment holding a
// RecordRegionsOnly: its writes after that record have no block records
// (its block records before it still count).
func (t *Tracker) Replay(boot string, recs []Record) (uint64, error) {
	fine, regions := roaring.New(), roaring.New()
	seg := newSegment(false) // records before any session: an older version's
	for _, r := range recs {
		switch r.Type {
		case RecordSession:
			if len(r.Payload) > MaxBootID {
				return 0, fmt.Errorf("%w: cbt session record of %d bytes", ErrCorrupt, len(r.Payload))
			}
			seg.end(fine, regions)
			seg = newSegment(boot != "" && string(r.Payload) == boot)
			continue
		case RecordRegionsOnly:
			if len(r.Payload) != 0 {
				return 0, fmt.Errorf("%w: cbt regions-only record of %d bytes", ErrCorrupt, len(r.Payload))
			}
			seg.coarse = true
			continue
		}
		bm, err := DecodeBitmap(r.Payload)
		if err != nil {
			return 0, err
		}
		switch r.Type {
		case RecordFine:
			fine.Or(bm)
		case RecordBlocks:
			if !seg.coarse {
				seg.blocks.Or(bm)
			}
		case RecordIntent:
			seg.regions.Or(bm)
		default:
			return 0, fmt.Errorf("%w: unknown cbt record type %#x", ErrCorrupt, r.Type)
		}
	}
	seg.end(fine, regions)
	return t.recover(fine, regions), nil
}

// segment is what Replay gathers of one session's records.
type segment struct {
	trusted, coarse bool // same boot; a RecordRegionsOnly seen
	blocks, regions *roaring.Bitmap
}

func newSegment(trusted bool) *segment {
	return &segment{trusted: trusted, blocks: roaring.New(), regions: roaring.New()}
}

// end adds what the segment recovers: its blocks if trusted, its regions
// whole unless its blocks say everything.
func (s *segment) end(fine, regions *roaring.Bitmap) {
	if s.trusted {
		fine.Or(s.blocks)
	}
	if !s.trusted || s.coarse {
		regions.Or(s.regions)
	}
}

// recover adds fine and every block of regions (and of the checkpoint's
// regions) to the open epoch, within the disk.
func (t *Tracker) recover(fine, regions *roaring.Bitmap) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := uint64(t.cfg.RegionSize / t.cfg.Granularity)
	last := t.blocks()
	before := t.mu.cur.GetCardinality()
	regions.Or(t.mu.intent) // durable in the checkpoint, so they stay
	for it := regions.Iterator(); it.HasNext(); {
		r := uint64(it.Next())
		if r*per >= last {
			break
		}
		fine.AddRange(r*per, min((r+1)*per, last))
	}
	fine.RemoveRange(last, 1<<32)
	t.mu.cur.Or(fine)
	return t.mu.cur.GetCardinality() - before
}

// SessionRecord is the RecordSession payload for boot ID boot: the disk
// appends it before any other record of a process to a journal.
func SessionRecord(boot string) Record {
	if len(boot) > MaxBootID {
		boot = "" // not a boot ID: never trusted
	}
	return Record{RecordSession, []byte(boot)}
}

// Encode serialises the tracker for a checkpoint; with closeEpoch the
// open epoch is encoded as closed (a snapshot), to be confirmed with
// Committed(true) once the checkpoint is durable. The caller holds writes
// off between Encode and Committed.
func (t *Tracker) Encode(closeEpoch bool) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	base, seq, closed, cur := t.mu.base, t.mu.seq, t.mu.closed, t.mu.cur
	if closeEpoch {
		base, seq, closed = t.closedAfter()
		cur = roaring.New()
	}
	var w bytes.Buffer
	u, _ := hex.DecodeString(t.mu.uuid)
	w.Write(u)
	put := func(v any) { binary.Write(&w, binary.LittleEndian, v) }
	put(uint64(t.cfg.Granularity))
	put(uint64(t.cfg.RegionSize))
	put(uint32(t.cfg.Retain))
	put(uint64(t.mu.size))
	put(base)
	put(seq)
	put(uint32(len(closed)))
	for _, e := range closed {
		put(e.seq)
		AppendBitmap(&w, e.bm)
	}
	AppendBitmap(&w, cur)
	AppendBitmap(&w, roaring.New())
	return metafile.Encode(ckptMagic, ckptVersion, w.Bytes())
}

// SizeHint bounds the length of what Encode(true) would return now,
// without encoding: Encode run-optimizes the bitmaps in place, which a
// reader (a query under a disk's shared barrier) must not see, while
// this only reads them. A run-optimized bitmap is never larger.
func (t *Tracker) SizeHint() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 256 + 12 + int(t.mu.cur.GetSerializedSizeInBytes()) // header, fields, the epoch it closes
	for _, e := range t.mu.closed {
		n += 12 + int(e.bm.GetSerializedSizeInBytes())
	}
	return n + 2*int(roaring.New().GetSerializedSizeInBytes()) + 8
}

// AppendBitmap writes bm as a uint32 length and the portable bytes.
func AppendBitmap(w *bytes.Buffer, bm *roaring.Bitmap) {
	b := EncodeBitmap(bm)
	binary.Write(w, binary.LittleEndian, uint32(len(b)))
	w.Write(b)
}

// ReadBitmap reads what AppendBitmap wrote.
func ReadBitmap(r *metafile.Reader) (*roaring.Bitmap, error) {
	b := r.Prefixed()
	if r.Short {
		return nil, fmt.Errorf("%w: short bitmap", ErrCorrupt)
	}
	return DecodeBitmap(b)
}

// closedAfter is the epoch list after closing the open epoch. mu held.
func (t *Tracker) closedAfter() (base, seq uint64, closed []epoch) {
	seq = t.mu.seq + 1
	closed = append(append([]epoch(nil), t.mu.closed...), epoch{seq, t.mu.cur})
	base = t.mu.base
	for len(closed) > t.cfg.Retain {
		base = closed[0].seq
		closed = closed[1:]
	}
	return base, seq, closed
}

// Committed is called once a checkpoint from Encode is durable: intents
// are now covered by it, and a closed epoch takes effect.
func (t *Tracker) Committed(closeEpoch bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if closeEpoch {
		t.mu.base, t.mu.seq, t.mu.closed = t.closedAfter()
		t.mu.cur = roaring.New()
	}
	t.resetVolatile(t.mu.cur.Clone())
}

// Decode restores a tracker from a checkpoint. name is for errors.
func Decode(name string, data []byte, log IntentLog) (*Tracker, error) {
	_, body, err := metafile.Decode(name, ckptMagic, ckptVersion, data)
	if err != nil {
		return nil, err
	}
	t := &Tracker{log: log}
	r := metafile.NewReader(body)
	if u := r.Bytes(16); u != nil {
		t.mu.uuid = hex.EncodeToString(u)
	}
	t.cfg.Granularity = int64(r.U64())
	t.cfg.RegionSize = int64(r.U64())
	t.cfg.Retain = int(r.U32())
	t.mu.size = int64(r.U64())
	t.mu.base, t.mu.seq = r.U64(), r.U64()
	intent, err := t.decodeEpochs(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if r.Short || r.Rest() != 0 {
		return nil, fmt.Errorf("%s: %w: checkpoint body malformed", name, ErrCorrupt)
	}
	if err := t.cfg.Validate(); err != nil || t.mu.base > t.mu.seq || t.mu.size < 0 {
		return nil, fmt.Errorf("%s: %w: bad geometry", name, ErrCorrupt)
	}
	t.resetVolatile(t.mu.cur.Clone())
	t.mu.intent = intent
	return t, nil
}

func (t *Tracker) decodeEpochs(r *metafile.Reader) (*roaring.Bitmap, error) {
	n := r.U32()
	if uint64(n) > uint64(r.Rest()) {
		return nil, fmt.Errorf("%w: %d epochs", ErrCorrupt, n)
	}
	prev := t.mu.base
	for i := uint32(0); i < n && !r.Short; i++ {
		seq := r.U64()
		bm, err := ReadBitmap(r)
		if err != nil {
			return nil, err
		}
		if seq <= prev || seq > t.mu.seq {
			return nil, fmt.Errorf("%w: epoch %d out of order", ErrCorrupt, seq)
		}
		prev = seq
		t.mu.closed = append(t.mu.closed, epoch{seq, bm})
	}
	var err error
	if t.mu.cur, err = ReadBitmap(r); err != nil {
		return nil, err
	}
	return ReadBitmap(r)
}

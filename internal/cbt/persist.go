package cbt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
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

// EncodeBitmap serialises a bitmap in the portable roaring format.
func EncodeBitmap(bm *roaring.Bitmap) []byte {
	bm.RunOptimize()
	b, err := bm.ToBytes()
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

// Apply replays one journal record. Call Recover after the last one.
func (t *Tracker) Apply(typ byte, payload []byte) error {
	bm, err := DecodeBitmap(payload)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch typ {
	case RecordFine:
		t.mu.cur.Or(bm)
	case RecordIntent:
		t.mu.intent.Or(bm)
	default:
		return fmt.Errorf("%w: unknown cbt record type %#x", ErrCorrupt, typ)
	}
	return nil
}

// Recover counts every block of every replayed intent region as changed
// in the open epoch: those regions may hold acknowledged writes whose fine
// bits never reached the journal. It reports how many regions it applied.
func (t *Tracker) Recover() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := uint64(t.cfg.RegionSize / t.cfg.Granularity)
	last := uint64((t.mu.size + t.cfg.Granularity - 1) / t.cfg.Granularity)
	n := 0
	for it := t.mu.intent.Iterator(); it.HasNext(); n++ {
		r := uint64(it.Next())
		t.mu.cur.AddRange(r*per, min((r+1)*per, last))
	}
	return n
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
		writeBitmap(&w, e.bm)
	}
	writeBitmap(&w, cur)
	writeBitmap(&w, roaring.New())
	return metafile.Encode(ckptMagic, ckptVersion, w.Bytes())
}

func writeBitmap(w *bytes.Buffer, bm *roaring.Bitmap) {
	b := EncodeBitmap(bm)
	binary.Write(w, binary.LittleEndian, uint32(len(b)))
	w.Write(b)
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
	t.resetVolatile()
}

// Decode restores a tracker from a checkpoint. name is for errors.
func Decode(name string, data []byte, log IntentLog) (*Tracker, error) {
	_, body, err := metafile.Decode(name, ckptMagic, ckptVersion, data)
	if err != nil {
		return nil, err
	}
	t := &Tracker{log: log}
	r := &reader{b: body}
	if u := r.bytes(16); u != nil {
		t.mu.uuid = hex.EncodeToString(u)
	}
	t.cfg.Granularity = int64(r.u64())
	t.cfg.RegionSize = int64(r.u64())
	t.cfg.Retain = int(r.u32())
	t.mu.size = int64(r.u64())
	t.mu.base, t.mu.seq = r.u64(), r.u64()
	intent, err := t.decodeEpochs(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, fmt.Errorf("%s: %w: checkpoint body malformed", name, ErrCorrupt)
	}
	if err := t.cfg.Validate(); err != nil || t.mu.base > t.mu.seq || t.mu.size < 0 {
		return nil, fmt.Errorf("%s: %w: bad geometry", name, ErrCorrupt)
	}
	t.resetVolatile()
	t.mu.intent = intent
	return t, nil
}

func (t *Tracker) decodeEpochs(r *reader) (*roaring.Bitmap, error) {
	n := r.u32()
	if uint64(n) > uint64(len(r.b)) {
		return nil, fmt.Errorf("%w: %d epochs", ErrCorrupt, n)
	}
	prev := t.mu.base
	for i := uint32(0); i < n && r.err == nil; i++ {
		seq := r.u64()
		bm, err := DecodeBitmap(r.bytes(int(r.u32())))
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
	if t.mu.cur, err = DecodeBitmap(r.bytes(int(r.u32()))); err != nil {
		return nil, err
	}
	return DecodeBitmap(r.bytes(int(r.u32())))
}

// reader consumes a byte slice; the first short read sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errors.New("short")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

package cbt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"
)

// Errors.
var (
	// ErrChangeIDInvalid: the change ID is malformed, belongs to another
	// disk or to before a reset, or has expired. The caller needs a full
	// backup; it is never answered with a wrong (e.g. empty) list.
	ErrChangeIDInvalid = errors.New("change ID invalid: a full backup is needed")
	// ErrFailed: an intent could not be made durable; the tracker refuses
	// further writes rather than risk a missed change.
	ErrFailed = errors.New("cbt: intent log failed")
	// ErrRegionsOnly is what an IntentLog returns, having logged nothing,
	// when it keeps too little room for block records: the tracker then
	// logs a RecordRegionsOnly and no more block records until the next
	// checkpoint.
	ErrRegionsOnly = errors.New("cbt: no room for block records")
)

// Journal record types used by the disk package for tracker state
// (docs/format.md, "CBT journal records").
const (
	// RecordFine: blocks changed, applied unconditionally (read on replay;
	// this version does not write it).
	RecordFine byte = 0x10
	// RecordIntent: whole intent regions, made durable before the first
	// write to each (invariant 1). Counted whole unless the fine records
	// of its session can be trusted.
	RecordIntent byte = 0x11
	// RecordSession: the machine's boot ID, written when a process starts
	// appending to a journal. The RecordBlocks after it are trusted only
	// when recovery runs under the same boot ID.
	RecordSession byte = 0x13
	// RecordBlocks: blocks about to be written, appended (not synced)
	// before the data write (invariant 1a).
	RecordBlocks byte = 0x14
	// RecordRegionsOnly (empty payload): the journal had no room left for
	// block records, so this session writes none after it; recovery counts
	// the regions of its segment whole, as for another boot.
	RecordRegionsOnly byte = 0x15
)

// MaxBootID bounds a RecordSession payload.
const MaxBootID = 64

// Defaults.
const (
	DefaultGranularity = 64 << 10
	DefaultRegionSize  = 256 << 20
	DefaultRetain      = 64
)

// Config fixes a tracker's geometry.
type Config struct {
	Granularity int64 // bytes per block, power of two ≥ 512
	RegionSize  int64 // bytes per intent region, multiple of Granularity
	Retain      int   // closed epochs kept
}

func (c Config) withDefaults() Config {
	if c.Granularity == 0 {
		c.Granularity = DefaultGranularity
	}
	if c.RegionSize == 0 {
		c.RegionSize = DefaultRegionSize
	}
	if c.Retain == 0 {
		c.Retain = DefaultRetain
	}
	return c
}

// Validate checks the geometry.
func (c Config) Validate() error {
	c = c.withDefaults()
	g := c.Granularity
	if g < 512 || g&(g-1) != 0 {
		return fmt.Errorf("cbt: granularity %d is not a power of two ≥ 512", g)
	}
	if c.RegionSize < g || c.RegionSize%g != 0 {
		return fmt.Errorf("cbt: region size %d is not a multiple of granularity %d", c.RegionSize, g)
	}
	if c.Retain < 1 {
		return fmt.Errorf("cbt: retain %d < 1", c.Retain)
	}
	return nil
}

// ID is a parsed change ID.
type ID struct {
	UUID string
	Seq  uint64
}

// String implements fmt.Stringer.
func (id ID) String() string { return id.UUID + "/" + strconv.FormatUint(id.Seq, 10) }

// Any is the change ID meaning "everything allocated" (a first backup).
const Any = "*"

// ParseID parses "<uuid>/<seq>".
func ParseID(s string) (ID, error) {
	u, seq, ok := strings.Cut(s, "/")
	if !ok || u == "" {
		return ID{}, fmt.Errorf("%w: %q is not <disk-uuid>/<sequence>", ErrChangeIDInvalid, s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q has a bad sequence", ErrChangeIDInvalid, s)
	}
	return ID{u, n}, nil
}

// Record is one journal record the tracker asks to log.
type Record struct {
	Type    byte
	Payload []byte
}

// IntentLog appends records to the journal in order, all of them or none,
// before returning; with sync it also makes them (and everything appended
// before) durable. Calls are serialised by the tracker. An error matching
// syscall.ENOSPC or EDQUOT must mean that nothing was logged (the log is
// as it was): the writers waiting get it and the tracker stays usable;
// so does ErrRegionsOnly, for records that hold a RecordBlocks (the log
// is short of room: see Tracker.Mark); any other error fails the tracker
// for good (ErrFailed).
type IntentLog interface {
	LogIntent(recs []Record, sync bool) error
}

type epoch struct {
	seq uint64
	bm  *roaring.Bitmap
}

// batch is one group commit of intents; writers wait on done.
type batch struct {
	done chan struct{}
	err  error
}

// Tracker tracks one disk. Safe for concurrent use.
type Tracker struct {
	cfg Config
	log IntentLog
	mu  struct {
		sync.Mutex
		uuid       string
		size       int64
		base, seq  uint64
		closed     []epoch
		cur        *roaring.Bitmap // open epoch
		saved      *roaring.Bitmap // blocks of cur durable in the checkpoint
		logged     *roaring.Bitmap // blocks in a RecordBlocks of this journal
		coarse     bool            // a RecordRegionsOnly is logged: no more block records
		intent     *roaring.Bitmap // durable regions
		inflight   intents         // being committed
		pending    intents         // waiting for the next commit
		current    *batch          // commit under way
		next       *batch          // commit that will take pending
		committing bool
		err        error
		union      struct {
			key unionKey
			bm  *roaring.Bitmap
		}
	}
}

// New starts tracking a disk of size bytes that nobody has written yet.
func New(cfg Config, uuid string, size int64, log IntentLog) (*Tracker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Tracker{cfg: cfg, log: log}
	t.mu.uuid, t.mu.size = uuid, size
	t.mu.cur = roaring.New()
	t.resetVolatile(roaring.New())
	return t, nil
}

// resetVolatile forgets what the journal holds: a new journal starts.
// saved is what the checkpoint just written (or read) holds.
func (t *Tracker) resetVolatile(saved *roaring.Bitmap) {
	t.mu.saved = saved
	t.mu.logged = roaring.New()
	t.mu.coarse = false
	t.mu.intent = roaring.New()
	t.mu.inflight = newIntents()
	t.mu.pending = newIntents()
}

// intents are blocks needing a RecordBlocks and regions needing a
// RecordIntent.
type intents struct{ blocks, regions *roaring.Bitmap }

func newIntents() intents { return intents{roaring.New(), roaring.New()} }

// Config returns the geometry.
func (t *Tracker) Config() Config { return t.cfg }

// UUID is the tracking identity; it changes on Reset.
func (t *Tracker) UUID() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.uuid
}

// Current is the change ID of the last closed epoch. Using it as "since"
// over-reports writes made after it within the open epoch, never misses.
func (t *Tracker) Current() ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return ID{t.mu.uuid, t.mu.seq}
}

// blocks is the disk's size in blocks. mu held.
func (t *Tracker) blocks() uint64 {
	return uint64((t.mu.size + t.cfg.Granularity - 1) / t.cfg.Granularity)
}

// Block range covering [off, off+length).
func span(off, length, unit int64) (uint64, uint64) {
	return uint64(off / unit), uint64((off + length + unit - 1) / unit)
}

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
)

// Journal record types used by the disk package for tracker state.
const (
	RecordFine   byte = 0x10
	RecordIntent byte = 0x11
)

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

// IntentLog makes a record durable (append and sync) before returning.
// Calls are serialised by the tracker. An error matching syscall.ENOSPC or
// EDQUOT must mean that nothing was logged (the log is as it was): the
// writers waiting get it and the tracker stays usable; any other error
// fails the tracker for good (ErrFailed).
type IntentLog interface {
	LogIntent(payload []byte) error
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
		intent     *roaring.Bitmap // durable regions
		inflight   *roaring.Bitmap // regions being committed
		pending    *roaring.Bitmap // regions waiting for the next commit
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
	t.resetVolatile()
	return t, nil
}

func (t *Tracker) resetVolatile() {
	t.mu.intent = roaring.New()
	t.mu.inflight = roaring.New()
	t.mu.pending = roaring.New()
}

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

// Block range covering [off, off+length).
func span(off, length, unit int64) (uint64, uint64) {
	return uint64(off / unit), uint64((off + length + unit - 1) / unit)
}

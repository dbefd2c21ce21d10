package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"
)

// A sector lease is VMFS-style on-disk locking (ATS): a lease record in
// one 512-byte sector of a disk, changed only by compare-and-write. It is
// not the backup lease of /v1/disks/{disk}/lease (Client.AcquireLease),
// which the host keeps in memory to keep two backups off one disk: a
// sector lease lives in the disk's own bytes, so every host and guest
// that shares the disk sees it, and the host knows nothing of it.
// docs/format.md, "Sector lease record", has the layout and rules.

// LeaseRecordSize is the size of a sector lease record.
const LeaseRecordSize = 512

const leaseMagic = "BWLEASE1"

// maxLeaseOwner bounds the owner name (its bytes at 50..303).
const maxLeaseOwner = 254

// Sector lease errors.
var (
	// ErrSectorLeaseHeld: another owner holds the lease (and, for
	// Acquire, kept its heartbeat going).
	ErrSectorLeaseHeld = errors.New("sector lease held by another owner")
	// ErrSectorLeaseLost: the record is no longer the one this holder
	// wrote (taken over after its heartbeat went stale, released, or
	// never this holder's): stop using what the lease protects.
	ErrSectorLeaseLost = errors.New("sector lease not held: taken over, released or never ours")
	// ErrNotALease: the sector holds neither zeroes nor a valid record
	// (a wrong offset); nothing was written.
	ErrNotALease = errors.New("sector holds no lease record")
)

// LeaseRecord is the decoded record. A zeroed sector is a free lease of
// generation 0.
type LeaseRecord struct {
	Held       bool          `json:"held"`
	Owner      string        `json:"owner,omitempty"`
	Generation uint64        `json:"generation"` // +1 at every acquire, takeover and release
	Heartbeat  uint64        `json:"heartbeat"`  // +1 at every renew
	Time       time.Time     `json:"time"`       // of the last write, on the writer's clock (informational)
	TTL        time.Duration `json:"ttl"`        // a heartbeat unchanged this long is stale
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Encode lays the record out in one sector.
func (r LeaseRecord) Encode() []byte {
	p := make([]byte, LeaseRecordSize)
	copy(p, leaseMagic)
	le := binary.LittleEndian
	le.PutUint32(p[8:], 1)
	if r.Held {
		le.PutUint32(p[12:], 1)
	}
	le.PutUint64(p[16:], r.Generation)
	le.PutUint64(p[24:], r.Heartbeat)
	le.PutUint64(p[32:], uint64(r.Time.UnixNano()))
	le.PutUint64(p[40:], uint64(r.TTL))
	owner := r.Owner[:min(len(r.Owner), maxLeaseOwner)]
	le.PutUint16(p[48:], uint16(len(owner)))
	copy(p[50:], owner)
	le.PutUint32(p[508:], crc(p[:508]))
	return p
}

// DecodeLeaseRecord reads a record; a zeroed sector is a free lease.
func DecodeLeaseRecord(p []byte) (LeaseRecord, error) {
	if len(p) != LeaseRecordSize {
		return LeaseRecord{}, fmt.Errorf("%w: %d bytes, want %d", ErrNotALease, len(p), LeaseRecordSize)
	}
	if bytes.Equal(p, make([]byte, LeaseRecordSize)) {
		return LeaseRecord{}, nil
	}
	le := binary.LittleEndian
	n := int(le.Uint16(p[48:]))
	switch {
	case string(p[:8]) != leaseMagic:
		return LeaseRecord{}, fmt.Errorf("%w: bad magic % x", ErrNotALease, p[:8])
	case le.Uint32(p[508:]) != crc(p[:508]):
		return LeaseRecord{}, fmt.Errorf("%w: checksum mismatch", ErrNotALease)
	case le.Uint32(p[8:]) != 1 || le.Uint32(p[12:]) > 1 || n > maxLeaseOwner:
		return LeaseRecord{}, fmt.Errorf("%w: version %d, state %d, owner length %d", ErrNotALease, le.Uint32(p[8:]), le.Uint32(p[12:]), n)
	}
	return LeaseRecord{Held: le.Uint32(p[12:]) == 1, Generation: le.Uint64(p[16:]), Heartbeat: le.Uint64(p[24:]),
		Time: time.Unix(0, int64(le.Uint64(p[32:]))).UTC(), TTL: time.Duration(le.Uint64(p[40:])),
		Owner: string(p[50 : 50+n])}, nil
}

// probe is what ReadSectorLease "expects": a compare-and-write of probe
// over probe changes no byte whatever the sector holds, and a miscompare
// returns the sector (an atomic read through the only API the host has
// for a disk's bytes).
var probe = bytes.Repeat([]byte{0xA5}, LeaseRecordSize)

// readSector returns the sector at off, atomically.
func (c *Client) readSector(ctx context.Context, diskName string, off int64) ([]byte, error) {
	cur, err := c.CompareAndWrite(ctx, diskName, off, probe, probe)
	switch {
	case err == nil:
		return bytes.Clone(probe), nil
	case errors.Is(err, ErrMiscompare):
		return cur, nil
	}
	return nil, err
}

// ReadSectorLease reads the lease record at off of a disk without
// changing it.
func (c *Client) ReadSectorLease(ctx context.Context, diskName string, off int64) (LeaseRecord, error) {
	cur, err := c.readSector(ctx, diskName, off)
	if err != nil {
		return LeaseRecord{}, err
	}
	return DecodeLeaseRecord(cur)
}

// SectorLease is one owner's handle on the lease record at an offset of
// a disk. Its methods are safe for concurrent use.
type SectorLease struct {
	c     *Client
	disk  string
	off   int64
	owner string
	ttl   time.Duration

	mu   sync.Mutex
	mine []byte // the record this handle last wrote; nil when not held
}

// SectorLease returns owner's handle on the lease at off (a multiple of
// 512) of diskName; ttl is how long its heartbeat may stand still before
// another owner may take the lease over.
func (c *Client) SectorLease(diskName string, off int64, owner string, ttl time.Duration) *SectorLease {
	return &SectorLease{c: c, disk: diskName, off: off, owner: owner, ttl: ttl}
}

// HeldError is ErrSectorLeaseHeld with the record that holds it.
type HeldError struct{ Record LeaseRecord }

// Error implements error.
func (e *HeldError) Error() string {
	return fmt.Sprintf("%v: %q, generation %d, heartbeat %d", ErrSectorLeaseHeld, e.Record.Owner, e.Record.Generation, e.Record.Heartbeat)
}

// Is makes errors.Is(err, ErrSectorLeaseHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrSectorLeaseHeld }

// TryAcquire takes the lease if it is free (never used or released);
// while another owner holds it, it fails with a *HeldError at once.
func (l *SectorLease) TryAcquire(ctx context.Context) (LeaseRecord, error) {
	return l.acquire(ctx, false)
}

// Acquire takes the lease, waiting while another owner holds it: free, it
// is taken; held, its record is watched, and once it has stood unchanged
// for its own TTL (a stale heartbeat) it is taken over by one
// compare-and-write expecting exactly that stale record, so a holder
// that renews in between keeps it. It returns when the lease is this
// owner's or ctx ends.
func (l *SectorLease) Acquire(ctx context.Context) (LeaseRecord, error) {
	return l.acquire(ctx, true)
}

func (l *SectorLease) acquire(ctx context.Context, wait bool) (LeaseRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := make([]byte, LeaseRecordSize) // first guess: never used
	var watched []byte                   // a held record seen unchanged since
	var since time.Time
	for {
		rec, err := DecodeLeaseRecord(cur)
		if err != nil {
			return rec, fmt.Errorf("disk %s offset %d: %w", l.disk, l.off, err)
		}
		if rec.Held && l.mine != nil && bytes.Equal(cur, l.mine) {
			return rec, nil // already ours
		}
		stale := rec.Held && watched != nil && bytes.Equal(cur, watched) && time.Since(since) >= rec.TTL
		if !rec.Held || stale {
			next := LeaseRecord{Held: true, Owner: l.owner, Generation: rec.Generation + 1, Time: time.Now(), TTL: l.ttl}
			enc := next.Encode()
			got, err := l.c.CompareAndWrite(ctx, l.disk, l.off, cur, enc)
			if err == nil {
				l.mine = enc
				return next, nil
			}
			if !errors.Is(err, ErrMiscompare) {
				return rec, err
			}
			cur = got // someone else moved first: look again
			continue
		}
		if !wait {
			return rec, &HeldError{rec}
		}
		if !bytes.Equal(cur, watched) {
			watched, since = cur, time.Now() // a heartbeat: start the clock again
		}
		if err := sleep(ctx, rec.TTL-time.Since(since)+time.Millisecond); err != nil {
			return rec, err
		}
		if cur, err = l.c.readSector(ctx, l.disk, l.off); err != nil {
			return rec, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Adopt makes this handle the holder of a lease its owner took earlier
// (another process, such as `blockwise lease acquire`): the record must
// be held by this handle's owner and, if generation is not 0, be of that
// generation (the token acquire printed). Otherwise ErrSectorLeaseLost.
func (l *SectorLease) Adopt(ctx context.Context, generation uint64) (LeaseRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := l.c.readSector(ctx, l.disk, l.off)
	if err != nil {
		return LeaseRecord{}, err
	}
	rec, err := DecodeLeaseRecord(cur)
	if err != nil {
		return rec, fmt.Errorf("disk %s offset %d: %w", l.disk, l.off, err)
	}
	if !rec.Held || rec.Owner != l.owner || (generation != 0 && rec.Generation != generation) {
		return rec, fmt.Errorf("%w: the record says held=%v by %q, generation %d; you are %q, generation %d",
			ErrSectorLeaseLost, rec.Held, rec.Owner, rec.Generation, l.owner, generation)
	}
	l.mine = cur
	return rec, nil
}

// Renew beats the heartbeat: one compare-and-write expecting the record
// this handle last wrote. A miscompare means the lease was taken over
// (the heartbeat had gone stale) or released: ErrSectorLeaseLost, and
// the handle no longer holds it.
func (l *SectorLease) Renew(ctx context.Context) (LeaseRecord, error) {
	return l.replace(ctx, func(r LeaseRecord) LeaseRecord {
		r.Heartbeat++
		r.Time = time.Now()
		return r
	})
}

// Release frees the lease (the next generation, held by nobody).
func (l *SectorLease) Release(ctx context.Context) (LeaseRecord, error) {
	return l.replace(ctx, func(r LeaseRecord) LeaseRecord {
		return LeaseRecord{Generation: r.Generation + 1, Time: time.Now()}
	})
}

func (l *SectorLease) replace(ctx context.Context, next func(LeaseRecord) LeaseRecord) (LeaseRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mine == nil {
		return LeaseRecord{}, fmt.Errorf("disk %s offset %d: %w", l.disk, l.off, ErrSectorLeaseLost)
	}
	old, err := DecodeLeaseRecord(l.mine)
	if err != nil {
		return old, err
	}
	rec := next(old)
	enc := rec.Encode()
	cur, err := l.c.CompareAndWrite(ctx, l.disk, l.off, l.mine, enc)
	if errors.Is(err, ErrMiscompare) {
		l.mine = nil
		now, _ := DecodeLeaseRecord(cur)
		return now, fmt.Errorf("disk %s offset %d: %w: now held=%v by %q, generation %d",
			l.disk, l.off, ErrSectorLeaseLost, now.Held, now.Owner, now.Generation)
	}
	if err != nil {
		return old, err // unknown outcome: keep the handle; a retry tells
	}
	l.mine = enc
	if !rec.Held {
		l.mine = nil
	}
	return rec, nil
}

// KeepAlive renews the lease every interval until ctx ends (nil) or a
// renewal fails (the lease is lost, or the host unreachable for longer
// than the caller tolerates: the caller decides).
func (l *SectorLease) KeepAlive(ctx context.Context, every time.Duration) error {
	for {
		if err := sleep(ctx, every); err != nil {
			return nil
		}
		if _, err := l.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				// Ended mid-renewal: that is the caller stopping it, not
				// a failed renewal (the record is the old or the renewed
				// one, both held).
				return nil
			}
			return err
		}
	}
}

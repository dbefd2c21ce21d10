package host

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// A lease lends a disk to one backup at a time. Two backups of one disk
// each take a snapshot and consolidate it at their end, which changes the
// layers under the other's reader; held here, at the host, the lease
// keeps out backups into different repositories too. It lives in the
// host's memory and expires unless renewed, so a holder killed with
// SIGKILL blocks the disk at most for its TTL (and a client may take
// over a lease whose holder it knows to be gone, by naming it: Replace).

// Lease is a named, expiring claim on a disk.
type Lease struct {
	ID       string
	Disk     string
	Holder   string // who, for the refused: "blockwise backup host=H pid=P"
	Acquired time.Time
	Expires  time.Time
}

// Lease errors.
var (
	// ErrLeaseHeld: another holder's unexpired lease is on the disk.
	ErrLeaseHeld = errors.New("disk leased")
	// ErrLeaseNotFound: no such lease (released, expired and taken, or
	// never granted).
	ErrLeaseNotFound = errors.New("lease not found")
)

// TTL bounds of a lease.
const (
	MinLeaseTTL = 100 * time.Millisecond
	MaxLeaseTTL = time.Hour
)

// AcquireLease leases the disk to holder for ttl. An unexpired lease of
// another is ErrLeaseHeld, naming its holder, unless its ID is replace
// (the caller knows its holder is gone).
func (h *Host) AcquireLease(disk, holder string, ttl time.Duration, replace string) (Lease, error) {
	if _, err := h.Disk(disk); err != nil {
		return Lease{}, err
	}
	ttl = min(max(ttl, MinLeaseTTL), MaxLeaseTTL)
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if l, ok := h.mu.leases[disk]; ok && now.Before(l.Expires) && l.ID != replace {
		return Lease{}, fmt.Errorf("disk %s: %w by %q since %s (expires in %s unless renewed)", disk, ErrLeaseHeld,
			l.Holder, l.Acquired.Format(time.RFC3339), l.Expires.Sub(now).Round(time.Second))
	}
	l := Lease{ID: newLeaseID(), Disk: disk, Holder: holder, Acquired: now, Expires: now.Add(ttl)}
	h.mu.leases[disk] = l
	return l, nil
}

// RenewLease extends lease id of the disk to ttl from now.
func (h *Host) RenewLease(disk, id string, ttl time.Duration) (Lease, error) {
	ttl = min(max(ttl, MinLeaseTTL), MaxLeaseTTL)
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.mu.leases[disk]
	if !ok || l.ID != id || !now.Before(l.Expires) {
		return Lease{}, fmt.Errorf("disk %s: lease %s: %w", disk, id, ErrLeaseNotFound)
	}
	l.Expires = now.Add(ttl)
	h.mu.leases[disk] = l
	return l, nil
}

// ReleaseLease ends lease id of the disk.
func (h *Host) ReleaseLease(disk, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.mu.leases[disk]
	if !ok || l.ID != id {
		return fmt.Errorf("disk %s: lease %s: %w", disk, id, ErrLeaseNotFound)
	}
	delete(h.mu.leases, disk)
	return nil
}

// CurrentLease is the disk's unexpired lease, if any.
func (h *Host) CurrentLease(disk string) (Lease, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.mu.leases[disk]
	if !ok || !time.Now().Before(l.Expires) {
		return Lease{}, fmt.Errorf("disk %s: %w", disk, ErrLeaseNotFound)
	}
	return l, nil
}

func newLeaseID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

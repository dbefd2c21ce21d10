package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Leaser is a Host that lends a disk to one backup at a time (the
// blockwise host does, through its API). Two backups of one disk would
// each consolidate their snapshot at the end, under the other's reader;
// the lease makes the second refuse at its start instead, naming the
// first. Implementations MUST wrap ErrLeaseHeld when another holds the
// lease and ErrLeaseLost when a renewal finds it gone.
type Leaser interface {
	AcquireLease(ctx context.Context, disk, holder string, ttl time.Duration, replace string) (Lease, error)
	CurrentLease(ctx context.Context, disk string) (Lease, error)
	RenewLease(ctx context.Context, disk, id string, ttl time.Duration) error
	ReleaseLease(ctx context.Context, disk, id string) error
}

// Lease is a disk's lease: who holds it since when.
type Lease struct {
	ID, Holder        string
	Acquired, Expires time.Time
}

var (
	// ErrLeaseHeld: another backup holds the disk's lease.
	ErrLeaseHeld = errors.New("another backup of this disk is running")
	// ErrLeaseLost: the lease expired (renewals failed) and may be held
	// by another backup now.
	ErrLeaseLost = errors.New("the disk's backup lease was lost")
)

// DefaultLeaseTTL is how long a backup's lease outlives its last renewal
// (every quarter of it): how long a backup killed on another machine can
// keep the next one out. One killed on this machine is taken over at
// once (its holder's process is gone).
const DefaultLeaseTTL = time.Minute

// holdLease takes the disk's lease for the backup and renews it until
// release; a lease whose holder is a dead process of this machine is
// taken over. The returned context ends (cause ErrLeaseLost) if a renewal
// finds the lease lost, or if none succeeds for a whole TTL. Hosts that
// are no Leaser lend nothing.
func holdLease(ctx context.Context, o Options) (context.Context, func(), error) {
	l, ok := o.Host.(Leaser)
	if !ok {
		return ctx, func() {}, nil
	}
	ttl := o.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	sent := time.Now() // the host starts the TTL later, on receipt
	lease, err := acquireLease(ctx, l, o.Disk, ttl)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		renewLease(ctx, l, o.Disk, lease.ID, ttl, sent.Add(ttl), stop, cancel)
	}()
	release := func() {
		close(stop)
		<-done
		rctx, c := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer c()
		l.ReleaseLease(rctx, o.Disk, lease.ID) // expires anyway
		cancel(nil)
	}
	return ctx, release, nil
}

func acquireLease(ctx context.Context, l Leaser, disk string, ttl time.Duration) (Lease, error) {
	lease, err := l.AcquireLease(ctx, disk, ownerTag(), ttl, "")
	if !errors.Is(err, ErrLeaseHeld) {
		return lease, err
	}
	cur, cerr := l.CurrentLease(ctx, disk)
	if cerr != nil || !holderGone(cur.Holder) {
		return Lease{}, err
	}
	return l.AcquireLease(ctx, disk, ownerTag(), ttl, cur.ID)
}

// holderGone: the holder is a backup of this machine whose process no
// longer exists (killed: SIGKILL skips the release).
func holderGone(holder string) bool {
	host, _ := os.Hostname()
	var h string
	var pid int
	if _, err := fmt.Sscanf(holder, snapshotTag+" host=%s pid=%d", &h, &pid); err != nil || h != host || pid <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// renewLease renews every quarter of the TTL until stop, so the lease
// outlives two failed renewals. A lost lease cancels the backup, which
// must not go on beside another: lost when a renewal says so, and also
// at valid, when no renewal has succeeded for a TTL (counted from when the
// last good one was sent, before the host received it), since the host
// may then have lent the disk to another backup while renewals failed.
func renewLease(ctx context.Context, l Leaser, disk, id string, ttl time.Duration, valid time.Time, stop <-chan struct{}, cancel context.CancelCauseFunc) {
	t := time.NewTicker(ttl / 4)
	defer t.Stop()
	expiry := time.NewTimer(time.Until(valid))
	defer expiry.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-expiry.C:
			cancel(fmt.Errorf("disk %s: no renewal succeeded for %s: %w", disk, ttl, ErrLeaseLost))
			return
		case <-t.C:
		}
		sent := time.Now()
		rctx, c := context.WithDeadline(ctx, valid) // never renews past the lease
		err := l.RenewLease(rctx, disk, id, ttl)
		c()
		switch {
		case errors.Is(err, ErrLeaseLost):
			cancel(fmt.Errorf("disk %s: %w", disk, err))
			return
		case err == nil:
			valid = sent.Add(ttl)
			expiry.Reset(time.Until(valid))
		}
		// Other errors (the host restarting, say) are retried at the
		// next tick, until valid.
	}
}

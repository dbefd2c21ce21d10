package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
)

// A lock stays valid for the Repository's Options.LockTTL without a
// refresh. A holder that runs longer refreshes it (writers do so as they
// upload packs); a lock past its expiry is treated as left by a crashed
// process and ignored.

// lockInfo is the sealed body of a lock file (envelope magic "BWLK").
type lockInfo struct {
	Exclusive bool      `json:"exclusive"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Time      time.Time `json:"time"`
	Expires   time.Time `json:"expires"`
	Nonce     string    `json:"nonce"` // makes every lock file name unique
}

const lockMagic = "BWLK"

// Lock is a held repository lock, or, from LockRead on a repository
// opened with SetNoLock, none at all (nothing to refresh or release). Shared locks (backup, forget) coexist;
// an exclusive lock (prune) excludes every other lock.
type Lock struct {
	r    *Repository
	mu   sync.Mutex // Refresh may be called from concurrent uploads
	info lockInfo
	name string
	none bool // LockRead under SetNoLock: no lock file
}

// SetNoLock makes LockRead take no lock and Lock, AddKey, RemoveKey and
// Unlock refuse (ErrInvalid), for reading a repository that cannot be
// written (restic's --no-lock). The risk: nothing keeps a prune in another process from deleting packs
// being read meanwhile (a restore then fails, a check reports damage that
// is not there).
func (r *Repository) SetNoLock(on bool) { r.noLock = on }

// writable refuses to write under SetNoLock: every write needs a lock
// (or, for key slots and stale locks, a repository opened for writing).
func (r *Repository) writable() error {
	if r.noLock {
		return fmt.Errorf("repo: this writes to the repository, which needs a lock, and the repository was opened without locking (for reading only): %w", ErrInvalid)
	}
	return nil
}

// LockRead takes the shared lock of a reader (check, stats, restore,
// serving a point), which keeps a prune from deleting what it reads; with
// SetNoLock, no lock.
func (r *Repository) LockRead(ctx context.Context) (*Lock, error) {
	if r.noLock {
		return &Lock{r: r, none: true}, nil
	}
	return r.Lock(ctx, false)
}

// Lock acquires a lock, or fails with ErrLocked. Protocol: refuse if a
// conflicting live lock exists; write ours; look again and back off if a
// conflicting lock appeared meanwhile. Two racing lockers may both back
// off, but never both proceed.
func (r *Repository) Lock(ctx context.Context, exclusive bool) (*Lock, error) {
	if err := r.writable(); err != nil {
		return nil, err
	}
	deadline, pause := time.Now().Add(r.lockWait), 50*time.Millisecond
	for {
		l, err := r.tryLock(ctx, exclusive)
		if !errors.Is(err, ErrLocked) || !time.Now().Before(deadline) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// SetLockWait makes Lock (and so backups, forget and prune) wait up to d
// for a conflicting lock to go away instead of failing at once: a backup
// scheduled while a prune runs then starts when the prune is done.
func (r *Repository) SetLockWait(d time.Duration) { r.lockWait = d }

func (r *Repository) tryLock(ctx context.Context, exclusive bool) (*Lock, error) {
	if err := r.checkLocks(ctx, exclusive, ""); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	l := &Lock{r: r, info: lockInfo{Exclusive: exclusive, Host: host, PID: os.Getpid(), Nonce: randomName()}}
	if err := l.write(ctx); err != nil {
		return nil, err
	}
	if err := r.checkLocks(ctx, exclusive, l.name); err != nil {
		l.Unlock(context.WithoutCancel(ctx))
		return nil, err
	}
	return l, nil
}

func (l *Lock) write(ctx context.Context) error {
	l.info.Time = time.Now().UTC()
	l.info.Expires = l.info.Time.Add(l.r.opts.LockTTL)
	body, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	id, err := l.r.saveFile(ctx, backend.Locks, sealEnvelope(l.r.crypt, lockMagic, body))
	if errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("repo: cannot write a lock: %w (%w)", ErrReadOnly, err)
	} else if err != nil {
		return err
	}
	l.name = id.String()
	return nil
}

// checkLocks fails if a live lock other than own conflicts.
func (r *Repository) checkLocks(ctx context.Context, exclusive bool, own string) error {
	names, err := r.listNames(ctx, backend.Locks)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == own {
			continue
		}
		li, err := r.readLock(ctx, n)
		if errors.Is(err, backend.ErrNotFound) {
			continue // released while we looked
		} else if err != nil {
			return err
		}
		if li.deadHolder() {
			// Left by a killed process on this host: it holds nothing.
			r.be.Remove(ctx, backend.Handle{Type: backend.Locks, Name: n})
			continue
		}
		if time.Now().Before(li.Expires) && (exclusive || li.Exclusive) {
			return fmt.Errorf("repo: lock %s held by %s pid %d since %s: %w", n[:8], li.Host, li.PID, li.Time.Format(time.RFC3339), ErrLocked)
		}
	}
	return nil
}

func (r *Repository) readLock(ctx context.Context, name string) (*lockInfo, error) {
	data, err := backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.Locks, Name: name}, 0, 0)
	if err != nil {
		return nil, err
	}
	body, err := r.checkedEnvelope(lockMagic, name, data)
	if err != nil {
		return nil, fmt.Errorf("repo: lock %s: %w", name, err)
	}
	var li lockInfo
	if err := json.Unmarshal(body, &li); err != nil {
		return nil, fmt.Errorf("repo: lock %s: %v: %w", name, err, ErrCorrupt)
	}
	return &li, nil
}

// Refresh extends the lock by writing a new lock file before removing the
// old one, so the lock is never absent.
func (l *Lock) Refresh(ctx context.Context) error {
	if l.none {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.name
	if err := l.write(ctx); err != nil {
		return err
	}
	return l.r.be.Remove(ctx, backend.Handle{Type: backend.Locks, Name: old})
}

// needsRefresh reports whether half the TTL has passed.
func (l *Lock) needsRefresh() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.info.Time) > l.r.opts.LockTTL/2
}

// KeepFresh refreshes the lock in the background, every LockTTL/4, until
// release, which stops that and unlocks. It is for holders that write
// nothing to the repository (a restore); a writer refreshes its lock as
// its packs go out. A refresh that fails is tried again at the next tick.
func (l *Lock) KeepFresh(ctx context.Context) (release func() error) {
	if l.none {
		return func() error { return nil }
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.r.opts.LockTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				l.Refresh(ctx)
			}
		}
	}()
	return func() error {
		close(stop)
		<-done
		return l.Unlock(context.WithoutCancel(ctx))
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock(ctx context.Context) error {
	if l.none {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.r.be.Remove(ctx, backend.Handle{Type: backend.Locks, Name: l.name})
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	return err
}

// deadHolder reports a lock taken on this host by a process that no
// longer exists (SIGKILL skips the unlock). Locks of other hosts wait for
// their expiry: their processes cannot be seen from here.
func (li *lockInfo) deadHolder() bool {
	host, err := os.Hostname()
	if err != nil || host != li.Host || li.PID <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(li.PID, 0), syscall.ESRCH)
}

// Unlock removes stale locks (expired, or held by a dead process on this
// host), or every lock with all, and reports how many it removed. Use all
// only when no other process uses the repository.
func (r *Repository) Unlock(ctx context.Context, all bool) (int, error) {
	if err := r.writable(); err != nil {
		return 0, err
	}
	names, err := r.listNames(ctx, backend.Locks)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		li, err := r.readLock(ctx, name)
		stale := err == nil && (li.deadHolder() || time.Now().After(li.Expires))
		if !all && !stale {
			continue
		}
		if err := r.be.Remove(ctx, backend.Handle{Type: backend.Locks, Name: name}); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

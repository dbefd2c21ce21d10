package backup

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// leaser is a Leaser whose renewals answer renewErr; its Host is nil
// (holdLease calls only the Leaser methods). The host's own lease table
// is tested in internal/host, and through the CLI in cmd/blockwise.
type leaser struct {
	Host
	renewErr error

	mu       sync.Mutex
	renewed  int
	released []string
	acquired time.Time
}

func (l *leaser) AcquireLease(_ context.Context, _, holder string, ttl time.Duration, _ string) (Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acquired = time.Now()
	return Lease{ID: "L1", Holder: holder, Acquired: l.acquired, Expires: l.acquired.Add(ttl)}, nil
}

func (l *leaser) CurrentLease(context.Context, string) (Lease, error) {
	return Lease{}, ErrLeaseLost
}

func (l *leaser) RenewLease(context.Context, string, string, time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.renewed++
	return l.renewErr
}

func (l *leaser) ReleaseLease(_ context.Context, _, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = append(l.released, id)
	return nil
}

// TestHoldLease: a backup whose renewals keep failing (the host does not
// answer, but keeps its lease table) must stop once its lease has run
// out — another backup may hold the disk by then — and not only when a
// renewal at last says "lost"; one whose renewals succeed runs on. In
// both cases release stops the renewals and releases the lease.
func TestHoldLease(t *testing.T) {
	const ttl = 200 * time.Millisecond
	tests := []struct {
		name     string
		renewErr error
		wantLost bool
	}{
		{"renewals succeed", nil, false},
		{"renewals fail (transient)", errors.New("connection refused"), true},
		{"renewal finds it lost", ErrLeaseLost, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &leaser{renewErr: tt.renewErr}
			ctx, release, err := holdLease(context.Background(), Options{Host: l, Disk: "vm", LeaseTTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
				if !tt.wantLost {
					t.Fatalf("context ended with renewals succeeding: %v", context.Cause(ctx))
				}
				if !errors.Is(context.Cause(ctx), ErrLeaseLost) {
					t.Fatalf("cause %v, want ErrLeaseLost", context.Cause(ctx))
				}
				l.mu.Lock()
				since := time.Since(l.acquired)
				l.mu.Unlock()
				if since > 2*ttl {
					t.Errorf("lease given up %v after it was taken, TTL %v: another backup could have run meanwhile", since, ttl)
				}
			case <-time.After(3 * ttl):
				if tt.wantLost {
					t.Fatalf("backup still running %v after its lease was taken, with every renewal failing (TTL %v)", 3*ttl, ttl)
				}
			}
			release()
			l.mu.Lock()
			n, rel := l.renewed, l.released
			l.mu.Unlock()
			if n == 0 || len(rel) != 1 || rel[0] != "L1" {
				t.Errorf("renewed %d times, released %v; want renewals and one release of L1", n, rel)
			}
			time.Sleep(ttl / 2)
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.renewed != n {
				t.Errorf("renewed after release (%d, then %d): the renewal goroutine did not stop", n, l.renewed)
			}
		})
	}
}

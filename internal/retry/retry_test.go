package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

var (
	errPassing = errors.New("passing")
	errFatal   = errors.New("fatal")
)

func passing(err error) bool { return errors.Is(err, errPassing) }

// TestDo: op's results, in order, against the policy: how many attempts
// are made and which error comes back.
func TestDo(t *testing.T) {
	fast := Policy{Attempts: 4, Base: time.Microsecond, Max: 10 * time.Microsecond}
	for _, c := range []struct {
		name     string
		p        Policy
		results  []error // op's results; past the end, errPassing
		attempts int
		want     error
	}{
		{"success at once", fast, []error{nil}, 1, nil},
		{"success after passing failures", fast, []error{errPassing, errPassing, nil}, 3, nil},
		{"a permanent error at once", fast, []error{errFatal}, 1, errFatal},
		{"a permanent error after a passing one", fast, []error{errPassing, errFatal}, 2, errFatal},
		{"attempts run out", fast, nil, 4, errPassing},
		{"one attempt", Policy{Attempts: 1, Base: time.Hour}, nil, 1, errPassing},
		{"no limit", Policy{Base: time.Microsecond, Max: time.Microsecond}, []error{errPassing, errPassing, errPassing, errPassing, errPassing, errPassing, errPassing, nil}, 8, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			n, err := Do(context.Background(), c.p, passing, func(attempt int) error {
				calls++
				if attempt != calls {
					t.Fatalf("attempt %d on call %d", attempt, calls)
				}
				if attempt <= len(c.results) {
					return c.results[attempt-1]
				}
				return errPassing
			})
			if n != c.attempts || calls != c.attempts || err != c.want {
				t.Errorf("Do: %d attempts (%d calls), %v; want %d, %v", n, calls, err, c.attempts, c.want)
			}
		})
	}
}

// A context that ends stops the wait at once, with op's last error.
func TestDoContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	n, err := Do(ctx, Policy{Base: time.Hour}, passing, func(int) error { return errPassing })
	if n != 1 || err != errPassing {
		t.Errorf("Do: %d attempts, %v; want 1, %v", n, err, errPassing)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Do waited %v past its context", d)
	}
}

// TestDelay: each delay lies in [half, all] of Base·2^(n-1) capped at
// Max, and the jitter varies it.
func TestDelay(t *testing.T) {
	p := Policy{Base: 10 * time.Millisecond, Max: time.Second}
	for _, c := range []struct {
		n    int
		full time.Duration
	}{
		{1, 10 * time.Millisecond},
		{2, 20 * time.Millisecond},
		{3, 40 * time.Millisecond},
		{7, 640 * time.Millisecond},
		{8, time.Second},
		{1000, time.Second},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := p.Delay(c.n)
			seen[d] = true
			if d < c.full/2 || d > c.full {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", c.n, d, c.full/2, c.full)
			}
		}
		if len(seen) < 100 {
			t.Errorf("Delay(%d): %d distinct values in 200, want jitter", c.n, len(seen))
		}
	}
	if d := (Policy{Base: time.Second}).Delay(80); d < time.Duration(1<<59) {
		t.Errorf("no cap, attempt 80: %v, want no overflow", d)
	}
	if d := (Policy{}).Delay(3); d != 0 {
		t.Errorf("zero policy: %v, want 0", d)
	}
}

// TestDoStopsWhenContextEnds: once ctx has ended no further attempt is
// made, even when the wait before it is over at once (a zero delay: the
// timer and the context are then both ready, and a select between them
// picks either).
func TestDoStopsWhenContextEnds(t *testing.T) {
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		n, err := Do(ctx, Policy{Attempts: 5}, passing, func(int) error {
			calls++
			cancel()
			return errPassing
		})
		if calls != 1 || n != 1 || !errors.Is(err, errPassing) {
			t.Fatalf("run %d: %d call(s), %d attempt(s), %v; want 1 attempt after the context ended, errPassing", i, calls, n, err)
		}
	}
}

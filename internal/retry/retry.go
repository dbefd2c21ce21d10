package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is how often and how patiently to retry.
type Policy struct {
	Attempts int           // most attempts, at least 1; 0: no limit (until the context ends)
	Base     time.Duration // delay before the second attempt, before jitter; doubles each time
	Max      time.Duration // cap on one delay, before jitter; 0: no cap
}

// Do calls op (with the 1-based attempt number) until it returns nil or
// an error that retryable rejects, p.Attempts attempts have failed, or
// ctx ends while it waits. It returns the number of attempts made and
// op's last error, unchanged: when that error is retryable the caller can
// tell running out of attempts (attempts == p.Attempts) from the context
// ending.
func Do(ctx context.Context, p Policy, retryable func(error) bool, op func(attempt int) error) (attempts int, err error) {
	for attempt := 1; ; attempt++ {
		if err = op(attempt); err == nil || !retryable(err) {
			return attempt, err
		}
		if p.Attempts > 0 && attempt >= p.Attempts || ctx.Err() != nil {
			return attempt, err
		}
		t := time.NewTimer(p.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, err
		case <-t.C:
		}
		if ctx.Err() != nil { // both were ready: select may pick the timer
			return attempt, err
		}
	}
}

// Delay is the wait after failed attempt n (from 1): Base·2^(n-1),
// capped at Max, less a random part of up to half of it.
func (p Policy) Delay(n int) time.Duration {
	d := p.Base
	for i := 1; i < n && (p.Max == 0 || d < p.Max) && d < 1<<60; i++ {
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	if d <= 1 {
		return d
	}
	return d - rand.N(d/2+1)
}

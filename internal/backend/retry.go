package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/blockwise/blockwise/internal/retry"
)

// Retry wraps a Backend and retries operations that fail with a transient
// error (see IsTransient), with exponential backoff, jitter and a bounded
// number of attempts (package retry). Permanent errors (ErrNotFound, ErrExists, ErrInvalid,
// context errors, anything not marked transient) are returned at once.
//
// A retried operation may have taken effect even though its first attempt
// reported failure (a lost acknowledgement). Retry resolves the two cases
// where that is visible: a retried Save that finds ErrExists compares the
// stored bytes with its own and succeeds if they match; a retried Remove
// that finds ErrNotFound succeeds.
type Retry struct {
	Backend
	Attempts  int           // total attempts, at least 1
	BaseDelay time.Duration // delay before the second attempt; doubles each time (less jitter)
	MaxDelay  time.Duration // cap on a single delay
}

var _ Backend = (*Retry)(nil)

// NewRetry returns a Retry with the given bound and sensible delays.
func NewRetry(be Backend, attempts int) *Retry {
	return &Retry{Backend: be, Attempts: attempts, BaseDelay: 50 * time.Millisecond, MaxDelay: 5 * time.Second}
}

// do runs op until it succeeds, fails permanently, or attempts run out.
// op receives the 1-based attempt number.
func (r *Retry) do(ctx context.Context, op func(attempt int) error) error {
	p := retry.Policy{Attempts: max(r.Attempts, 1), Base: r.BaseDelay, Max: r.MaxDelay}
	attempts, err := retry.Do(ctx, p, IsTransient, op)
	switch {
	case err == nil || !IsTransient(err):
		return err
	case attempts >= p.Attempts:
		return fmt.Errorf("backend: giving up after %d attempts: %w", attempts, err)
	}
	return errors.Join(ctx.Err(), err) // the context ended during a wait
}

// Save implements Backend.
func (r *Retry) Save(ctx context.Context, h Handle, data []byte) error {
	return r.do(ctx, func(attempt int) error {
		err := r.Backend.Save(ctx, h, data)
		if attempt > 1 && errors.Is(err, ErrExists) {
			return r.sameContent(ctx, h, data, err)
		}
		return err
	})
}

// sameContent decides whether an ErrExists after a failed attempt is our
// own earlier write (success) or somebody else's object (keep ErrExists).
func (r *Retry) sameContent(ctx context.Context, h Handle, data []byte, existsErr error) error {
	got, err := LoadAll(ctx, r.Backend, h, 0, 0)
	if err != nil {
		return err
	}
	if bytes.Equal(got, data) {
		return nil
	}
	return existsErr
}

// Load implements Backend. Only opening is retried; a reader failing
// mid-stream is the caller's to handle.
func (r *Retry) Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	var rd io.ReadCloser
	err := r.do(ctx, func(int) (err error) {
		rd, err = r.Backend.Load(ctx, h, offset, length)
		return err
	})
	return rd, err
}

// Stat implements Backend.
func (r *Retry) Stat(ctx context.Context, h Handle) (FileInfo, error) {
	var fi FileInfo
	err := r.do(ctx, func(int) (err error) {
		fi, err = r.Backend.Stat(ctx, h)
		return err
	})
	return fi, err
}

// fnError marks an error returned by the caller's List callback so it is
// never mistaken for a backend failure and retried.
type fnError struct{ err error }

// Error implements error.
func (e fnError) Error() string { return e.err.Error() }

// List implements Backend. A retried listing skips names already passed
// to fn, so fn sees each object at most once.
func (r *Retry) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	seen := map[string]bool{}
	err := r.do(ctx, func(int) error {
		return r.Backend.List(ctx, t, func(fi FileInfo) error {
			if seen[fi.Name] {
				return nil
			}
			seen[fi.Name] = true
			if err := fn(fi); err != nil {
				return fnError{err}
			}
			return nil
		})
	})
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

// Remove implements Backend.
func (r *Retry) Remove(ctx context.Context, h Handle) error {
	return r.do(ctx, func(attempt int) error {
		err := r.Backend.Remove(ctx, h)
		if attempt > 1 && errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
}

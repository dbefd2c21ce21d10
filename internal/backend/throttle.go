package backend

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/time/rate"
)

// Throttle wraps a Backend and bounds the bytes per second it sends
// (Save) and receives (Load), like restic's --limit-upload and
// --limit-download, so a backup over a shared link leaves room for other
// traffic. A rate of 0 leaves that direction unlimited. Stack it under
// Retry and Limit (NewRetry(NewLimit(NewThrottle(be, ...), n), k)): a
// retried Save sends its bytes again and pays for them again.
//
// A Save waits until the bucket holds its bytes, then sends them at the
// link's speed; a Load's reader waits as it is read. Either way the
// average over a second or more stays at the rate. The bucket holds
// throttleBurst bytes (or a second's worth at lower rates), so a burst
// after an idle spell stays short.
type Throttle struct {
	Backend
	up, down *rate.Limiter // nil: unlimited
}

var _ Backend = (*Throttle)(nil)

// throttleBurst bounds the bucket: a 16 MiB pack at 1 MiB/s is sent in
// 256 KiB steps, not all at once after 16 s.
const throttleBurst = 256 << 10

// NewThrottle limits uploads to up and downloads to down bytes per
// second (0: no limit in that direction).
func NewThrottle(be Backend, up, down int64) *Throttle {
	return &Throttle{Backend: be, up: limiter(up), down: limiter(down)}
}

func limiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), int(min(bytesPerSec, throttleBurst)))
}

// wait takes n bytes from l, a burst at a time.
func wait(ctx context.Context, l *rate.Limiter, n int) error {
	for l != nil && n > 0 {
		step := min(n, l.Burst())
		if err := l.WaitN(ctx, step); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The wait would outlast the context's deadline.
			return fmt.Errorf("throttle: %w (%v)", context.DeadlineExceeded, err)
		}
		n -= step
	}
	return nil
}

// Save implements Backend.
func (t *Throttle) Save(ctx context.Context, h Handle, data []byte) error {
	if err := wait(ctx, t.up, len(data)); err != nil {
		return err
	}
	return t.Backend.Save(ctx, h, data)
}

// Load implements Backend.
func (t *Throttle) Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	rd, err := t.Backend.Load(ctx, h, offset, length)
	if err != nil || t.down == nil {
		return rd, err
	}
	return &throttledReader{ReadCloser: rd, ctx: ctx, l: t.down}, nil
}

type throttledReader struct {
	io.ReadCloser
	ctx context.Context
	l   *rate.Limiter
}

// Read reads at most a burst, then waits for what it read.
func (r *throttledReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p[:min(len(p), r.l.Burst())])
	if werr := wait(r.ctx, r.l, n); werr != nil && err == nil {
		err = werr
	}
	return n, err
}

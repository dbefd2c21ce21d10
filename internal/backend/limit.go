package backend

import (
	"context"
	"io"
	"sync"
)

// Limit wraps a Backend and bounds how many operations run at once, so a
// repository with many concurrent writers and readers keeps a fixed
// number of connections to a remote store. Stack it under Retry
// (NewRetry(NewLimit(be, n), k)) so a request waiting out its backoff
// does not hold a slot.
//
// A Load holds its slot until the reader is closed or read to the end:
// the connection is busy streaming until then. A caller that keeps n
// readers open and opens another blocks until its context ends. List
// holds a slot only while the backend produces entries, not while fn
// runs, so fn may call the Backend again.
type Limit struct {
	Backend
	sem chan struct{}
}

var _ Backend = (*Limit)(nil)

// NewLimit allows at most n (at least 1) operations in flight.
func NewLimit(be Backend, n int) *Limit {
	return &Limit{Backend: be, sem: make(chan struct{}, max(n, 1))}
}

func (l *Limit) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limit) release() { <-l.sem }

// Save implements Backend.
func (l *Limit) Save(ctx context.Context, h Handle, data []byte) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Backend.Save(ctx, h, data)
}

// Load implements Backend.
func (l *Limit) Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error) {
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	rd, err := l.Backend.Load(ctx, h, offset, length)
	if err != nil {
		l.release()
		return nil, err
	}
	return &limitReader{ReadCloser: rd, release: sync.OnceFunc(l.release)}, nil
}

type limitReader struct {
	io.ReadCloser
	release func()
}

// Read implements io.Reader.
func (r *limitReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err == io.EOF {
		r.release()
	}
	return n, err
}

// Close implements io.Closer.
func (r *limitReader) Close() error {
	r.release()
	return r.ReadCloser.Close()
}

// Stat implements Backend.
func (l *Limit) Stat(ctx context.Context, h Handle) (FileInfo, error) {
	if err := l.acquire(ctx); err != nil {
		return FileInfo{}, err
	}
	defer l.release()
	return l.Backend.Stat(ctx, h)
}

// List implements Backend.
func (l *Limit) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	held := true
	defer func() {
		if held {
			l.release()
		}
	}()
	return l.Backend.List(ctx, t, func(fi FileInfo) error {
		l.release()
		held = false
		err := fn(fi)
		if aerr := l.acquire(ctx); aerr != nil {
			return aerr
		}
		held = true
		return err
	})
}

// Remove implements Backend.
func (l *Limit) Remove(ctx context.Context, h Handle) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Backend.Remove(ctx, h)
}

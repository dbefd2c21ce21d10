package main

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/backend"
)

// counting counts the requests that reach the store: for S3, Save is a
// PUT, Load a GET, Stat a HEAD, List a LIST (of one page or more), Remove
// a HEAD and a DELETE.
type counting struct {
	backend.Backend
	put, get, head, list, del atomic.Int64
}

var _ backend.Backend = (*counting)(nil)

// Save implements backend.Backend, counting the request.
func (c *counting) Save(ctx context.Context, h backend.Handle, d []byte) error {
	c.put.Add(1)
	return c.Backend.Save(ctx, h, d)
}

// Load implements backend.Backend, counting the request.
func (c *counting) Load(ctx context.Context, h backend.Handle, off, n int64) (io.ReadCloser, error) {
	c.get.Add(1)
	return c.Backend.Load(ctx, h, off, n)
}

// Stat implements backend.Backend, counting the request.
func (c *counting) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	c.head.Add(1)
	return c.Backend.Stat(ctx, h)
}

// List implements backend.Backend, counting the request.
func (c *counting) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	c.list.Add(1)
	return c.Backend.List(ctx, t, fn)
}

// Remove implements backend.Backend, counting the request.
func (c *counting) Remove(ctx context.Context, h backend.Handle) error {
	c.del.Add(1)
	return c.Backend.Remove(ctx, h)
}

func (c *counting) reset() {
	for _, v := range []*atomic.Int64{&c.put, &c.get, &c.head, &c.list, &c.del} {
		v.Store(0)
	}
}

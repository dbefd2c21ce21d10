package nbd

import "context"

// ReadAt reads len(p) bytes at off on a live path.
func (m *Multipath) ReadAt(ctx context.Context, p []byte, off int64) error {
	return m.do(ctx, len(p), func(c *Client) error { return c.ReadAt(ctx, p, off) })
}

// WriteAt writes p at off. A write cut off by its path's death is sent
// again on another path: at a fixed offset that is harmless.
func (m *Multipath) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return m.do(ctx, len(p), func(c *Client) error { return c.WriteAt(ctx, p, off, fua) })
}

// Zero writes zeroes over [off, off+length) (idempotent like a write).
func (m *Multipath) Zero(ctx context.Context, off, length int64, punch, fast bool) error {
	return m.do(ctx, 0, func(c *Client) error { return c.Zero(ctx, off, length, punch, fast) })
}

// Flush makes completed writes durable. With multi-conn (which the
// host's exports advertise) a flush on any path covers writes completed
// on every path, so it may move to another path too.
func (m *Multipath) Flush(ctx context.Context) error {
	return m.do(ctx, 0, func(c *Client) error { return c.Flush(ctx) })
}

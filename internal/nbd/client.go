package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// ClientOptions configures Dial.
type ClientOptions struct {
	// TLSConfig is used for nbds URIs (RootCAs, client certificate...).
	// ServerName defaults to the URI host; TLS 1.3 is the minimum.
	TLSConfig *tls.Config
	// MetaContexts are selected with NBD_OPT_SET_META_CONTEXT, e.g.
	// "base:allocation" or "qemu:dirty-bitmap:NAME", for BlockStatus.
	MetaContexts []string
}

// Client is a connection to one export. Its methods may be called from
// many goroutines at once; requests are pipelined on the connection and
// answered out of order.
type Client struct {
	raw  net.Conn // the socket
	conn net.Conn // raw, or the TLS session over it
	br   *bufio.Reader
	bw   *bufio.Writer
	wsem chan struct{} // write lock that a ctx can give up on

	size       int64
	flags      uint16
	sizes      BlockSizes
	structured bool
	contexts   map[string]uint32

	mu      sync.Mutex
	pending map[uint64]*call
	handle  uint64
	err     error // sticky: set once the connection is unusable
	done    chan struct{}
}

// call is one request waiting for its reply. The reader goroutine fills
// it; mu guards p against a caller that gave up (ctx) and returned.
type call struct {
	typ       uint16
	off       uint64
	length    uint32
	ctxID     uint32
	mu        sync.Mutex
	p         []byte // READ destination, nil once abandoned
	abandoned bool
	covered   uint64
	extents   []Extent
	gotStatus bool
	err       error
	done      chan struct{}
}

// Dial connects to the export named by uri (see ParseURI) and negotiates
// structured replies, the requested meta contexts and, for nbds, TLS.
func Dial(ctx context.Context, uri string, opts *ClientOptions) (*Client, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &ClientOptions{}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, u.Network, u.Address)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial %s: %w", uri, err)
	}
	c, err := newClient(ctx, nc, u, opts)
	if err != nil {
		return nil, fmt.Errorf("nbd: handshake with %s: %w", uri, err)
	}
	return c, nil
}

// newClient runs the handshake on an established connection, which it
// owns from then on.
func newClient(ctx context.Context, nc net.Conn, u *URI, opts *ClientOptions) (*Client, error) {
	c := &Client{
		raw: nc, conn: nc,
		br:       bufio.NewReaderSize(nc, 64<<10),
		bw:       bufio.NewWriterSize(nc, 64<<10),
		wsem:     make(chan struct{}, 1),
		contexts: make(map[string]uint32),
		pending:  make(map[uint64]*call),
		done:     make(chan struct{}),
	}
	err := c.handshake(ctx, u, opts)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

// Size is the export size in bytes.
func (c *Client) Size() int64 { return c.size }

// Flags are the transmission flags the server sent (FlagReadOnly, ...).
func (c *Client) Flags() uint16 { return c.flags }

// BlockSizes are the server's constraints; zero if it sent none.
func (c *Client) BlockSizes() BlockSizes { return c.sizes }

// MetaContexts returns the contexts the server agreed to, by name.
func (c *Client) MetaContexts() []string {
	out := make([]string, 0, len(c.contexts))
	for n := range c.contexts {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (c *Client) maxPayload() int {
	if m := c.sizes.Maximum; m > 0 && m < DefaultMaxPayload {
		return int(m)
	}
	return DefaultMaxPayload
}

// Close sends NBD_CMD_DISC, closes the connection and fails requests
// still waiting with ErrClientClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	alive := c.err == nil
	c.mu.Unlock()
	if alive {
		// A writer stuck on a server that stopped reading must not stop
		// Close: then the connection is closed without NBD_CMD_DISC.
		select {
		case c.wsem <- struct{}{}:
			c.raw.SetWriteDeadline(time.Now().Add(time.Second))
			c.bw.Write(requestHeader(nil, 0, cmdDisc, 0, 0, 0))
			c.bw.Flush()
			<-c.wsem
		case <-time.After(time.Second):
		}
	}
	c.fail(ErrClientClosed)
	<-c.done
	return nil
}

// fail marks the connection dead and wakes every waiter with err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		if !errors.Is(err, ErrClientClosed) {
			err = fmt.Errorf("%w: %w", ErrClientClosed, err)
		}
		c.err = err
	}
	pending := c.pending
	c.pending = make(map[uint64]*call)
	c.mu.Unlock()
	c.raw.Close()
	for _, cl := range pending {
		cl.finish(c.err)
	}
}

func (cl *call) finish(err error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	select {
	case <-cl.done:
		return
	default:
	}
	if cl.err == nil {
		cl.err = err
	}
	close(cl.done)
}

func requestHeader(b []byte, flags, typ uint16, handle, off uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// do sends one request and waits for its reply. Once the request is on
// the wire, a cancelled ctx only detaches the caller; the reply is still
// consumed and dropped by the reader, keeping the stream in sync.
func (c *Client) do(ctx context.Context, cl *call, flags uint16, payload []byte) error {
	cl.done = make(chan struct{})
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.handle++
	h := c.handle
	c.pending[h] = cl
	c.mu.Unlock()
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		c.forget(h)
		return ctx.Err()
	}
	c.bw.Write(requestHeader(nil, flags, cl.typ, h, cl.off, cl.length))
	c.bw.Write(payload)
	err := c.bw.Flush()
	<-c.wsem
	if err != nil {
		c.fail(fmt.Errorf("nbd: sending request: %w", err))
	}
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
		cl.mu.Lock()
		cl.abandoned, cl.p = true, nil
		cl.mu.Unlock()
		return ctx.Err()
	}
}

func (c *Client) forget(h uint64) {
	c.mu.Lock()
	delete(c.pending, h)
	c.mu.Unlock()
}

// ReadAt reads len(p) bytes at off. Reads larger than the server's
// maximum payload are split.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	for len(p) > 0 {
		n := min(len(p), c.maxPayload())
		cl := &call{typ: cmdRead, off: uint64(off), length: uint32(n), p: p[:n]}
		if err := c.do(ctx, cl, 0, nil); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt writes p at off; with fua the data is durable when it returns.
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if c.flags&FlagReadOnly != 0 {
		return &Error{Code: EPERM, Message: "export is read-only"}
	}
	var flags uint16
	if fua && c.flags&FlagSendFUA != 0 {
		flags = cmdFlagFUA
	}
	for len(p) > 0 {
		n := min(len(p), c.maxPayload())
		cl := &call{typ: cmdWrite, off: uint64(off), length: uint32(n)}
		if err := c.do(ctx, cl, flags, p[:n]); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	if fua && flags == 0 {
		return c.Flush(ctx)
	}
	return nil
}

// Flush makes every completed write durable.
func (c *Client) Flush(ctx context.Context) error {
	if c.flags&FlagSendFlush == 0 {
		return nil // the server has no cache to flush
	}
	return c.do(ctx, &call{typ: cmdFlush}, 0, nil)
}

// maxEffect bounds one TRIM/WRITE_ZEROES/BLOCK_STATUS: a u32 length
// kept aligned so split requests stay aligned too.
const maxEffect = 1 << 30

// Zero writes zeroes over [off, off+length). punch lets the server
// deallocate; fast asks for ErrNotSupported instead of a slow fallback.
func (c *Client) Zero(ctx context.Context, off, length int64, punch, fast bool) error {
	if c.flags&FlagSendWriteZeroes == 0 || (fast && c.flags&FlagSendFastZero == 0) {
		return &Error{Code: ENOTSUP, Message: "server lacks WRITE_ZEROES"}
	}
	var flags uint16
	if !punch {
		flags |= cmdFlagNoHole
	}
	if fast {
		flags |= cmdFlagFastZero
	}
	return c.ranged(ctx, cmdWriteZeroes, flags, off, length)
}

// Trim tells the server the range is no longer needed.
func (c *Client) Trim(ctx context.Context, off, length int64) error {
	if c.flags&FlagSendTrim == 0 {
		return &Error{Code: ENOTSUP, Message: "server lacks TRIM"}
	}
	return c.ranged(ctx, cmdTrim, 0, off, length)
}

func (c *Client) ranged(ctx context.Context, typ, flags uint16, off, length int64) error {
	for length > 0 {
		n := min(length, maxEffect)
		cl := &call{typ: typ, off: uint64(off), length: uint32(n)}
		if err := c.do(ctx, cl, flags, nil); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// BlockStatus asks for the extents of a negotiated meta context from off.
// The answer may cover less than length (but at least one byte); with
// reqOne the server returns a single extent.
func (c *Client) BlockStatus(ctx context.Context, context string, off, length int64, reqOne bool) ([]Extent, error) {
	id, ok := c.contexts[context]
	if !ok {
		return nil, fmt.Errorf("%w: meta context %q not negotiated", ErrNotSupported, context)
	}
	var flags uint16
	if reqOne {
		flags = cmdFlagReqOne
	}
	cl := &call{typ: cmdBlockStatus, off: uint64(off), length: uint32(min(length, maxEffect)), ctxID: id}
	if err := c.do(ctx, cl, flags, nil); err != nil {
		return nil, err
	}
	return cl.extents, nil
}

// readLoop is the only reader of the connection once transmission
// started. It ends when the connection fails or closes.
func (c *Client) readLoop() {
	defer close(c.done)
	var magic [4]byte
	for {
		_, err := io.ReadFull(c.br, magic[:])
		if err == nil {
			switch binary.BigEndian.Uint32(magic[:]) {
			case simpleMagic:
				err = c.readSimple()
			case structuredMagic:
				err = c.readChunk()
			default:
				err = fmt.Errorf("%w: bad reply magic", ErrProtocol)
			}
		}
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// take finds the call for a reply; unknown handles break the protocol.
// The call stays pending until complete, so that a failure while reading
// its reply still reaches its waiter.
func (c *Client) take(h uint64) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.pending[h]
	if !ok {
		return nil, fmt.Errorf("%w: reply for unknown handle %#x", ErrProtocol, h)
	}
	return cl, nil
}

func (c *Client) readSimple() error {
	var b [12]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return err
	}
	code, h := binary.BigEndian.Uint32(b[:]), binary.BigEndian.Uint64(b[4:])
	cl, err := c.take(h)
	if err != nil {
		return err
	}
	if code == 0 && cl.typ == cmdRead {
		if err := c.deliver(cl, cl.off, int(cl.length), false); err != nil {
			return err
		}
	}
	c.forget(h)
	switch {
	case code != 0:
		cl.finish(&Error{Code: code})
	case cl.typ == cmdBlockStatus:
		cl.finish(fmt.Errorf("%w: simple reply to BLOCK_STATUS", ErrProtocol))
	default:
		cl.finish(nil)
	}
	return nil
}

// deliver moves n bytes of read data (or, for a hole, zeroes) at export
// offset off into the caller's buffer, unless the caller gave up. Data is
// staged in a pooled buffer so that a stalled server never holds cl.mu
// and a cancelled caller can always return.
func (c *Client) deliver(cl *call, off uint64, n int, hole bool) error {
	if off < cl.off || off-cl.off > uint64(cl.length) || uint64(n) > uint64(cl.length)-(off-cl.off) {
		return fmt.Errorf("%w: read chunk outside request", ErrProtocol)
	}
	var staged *[]byte
	if !hole {
		staged = getStage(n)
		defer stagePool.Put(staged)
		if _, err := io.ReadFull(c.br, *staged); err != nil {
			return err
		}
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.covered += uint64(n)
	if cl.abandoned {
		return nil
	}
	dst := cl.p[off-cl.off : off-cl.off+uint64(n)]
	if hole {
		clear(dst)
	} else {
		copy(dst, *staged)
	}
	return nil
}

var stagePool sync.Pool

func getStage(n int) *[]byte {
	if b, ok := stagePool.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

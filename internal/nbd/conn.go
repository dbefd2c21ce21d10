package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// The lifecycle of one server connection: accepted (newServerConn),
// served through handshake (handshake.go) and transmission
// (transmit.go), and stopped gracefully (shutdown) or at once (kill) by
// the Server.

// serverConn is one client connection, through handshake and transmission.
type serverConn struct {
	s   *Server
	log *slog.Logger
	raw net.Conn // the accepted socket; closing it ends everything
	br  *bufio.Reader
	bw  *bufio.Writer
	w   io.Writer // what bw writes to (raw, or the TLS conn); replies go here directly

	mu           sync.Mutex
	transmitting bool
	stopping     bool
	ctx          context.Context
	cancel       context.CancelFunc

	tlsUp      bool
	tlsState   *tls.ConnectionState // set once STARTTLS succeeded
	structured bool
	noZeroes   bool
	metaExport string
	meta       []string // selected contexts; the context ID is index+1

	exp    Export
	nowait NoWaitReader // exp, when reads may run on the reader (runInline)
	name   string
	size   uint64
	flags  uint16
	sizes  BlockSizes
	maxPay uint32
	// budget is ServerOptions.ConnBufferBytes: this connection's payload
	// bytes in flight (see acquire).
	budget *semaphore.Weighted
}

// unixSockBuf is the socket buffer asked for on unix connections. Linux
// defaults to 208 KiB there (TCP autotunes to 4 MiB on its own): a 256 KiB
// READ reply then never fits, every reply parks the writer on EAGAIN and
// the reader waits for space. The kernel caps it at net.core.[rw]mem_max.
const unixSockBuf = 4 << 20

func newServerConn(s *Server, nc net.Conn) *serverConn {
	if uc, ok := nc.(*net.UnixConn); ok {
		uc.SetWriteBuffer(unixSockBuf)
		uc.SetReadBuffer(unixSockBuf)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &serverConn{
		s: s, raw: nc, ctx: ctx, cancel: cancel, budget: semaphore.NewWeighted(s.opts.ConnBufferBytes),
		log: s.log.With("remote", nc.RemoteAddr().String()),
		br:  bufio.NewReaderSize(nc, 64<<10),
		bw:  bufio.NewWriterSize(nc, 64<<10),
		w:   nc,
	}
}

// shutdown asks the connection to stop gracefully: a handshake is cut, a
// transmission stops reading and finishes what it has.
func (c *serverConn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	if c.transmitting {
		c.raw.SetReadDeadline(time.Now())
	} else {
		c.raw.Close()
	}
}

func (c *serverConn) kill() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.cancel()
	c.raw.Close()
}

func (c *serverConn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

func (c *serverConn) serve() {
	defer c.cancel()
	defer c.raw.Close()
	deadline := time.Now().Add(c.s.opts.HandshakeTimeout)
	c.raw.SetDeadline(deadline)
	if !c.handshake() {
		// A client cut by the timeout sees only "server disconnected":
		// say why here, where an administrator looks.
		if !time.Now().Before(deadline) && !c.isStopping() {
			c.log.Info("nbd: handshake timed out", "timeout", c.s.opts.HandshakeTimeout)
		}
		return
	}
	c.raw.SetDeadline(time.Time{})
	c.mu.Lock()
	c.transmitting = true
	stopping := c.stopping
	c.mu.Unlock()
	if stopping {
		c.exp.Close()
		return
	}
	c.log.Debug("nbd: transmission", "export", c.name, "structured", c.structured, "tls", c.tlsUp)
	c.transmit()
}

package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// ServerOptions configures a Server. The zero value serves plain NBD with
// 16 workers per connection and logs nothing.
type ServerOptions struct {
	// TLSConfig enables NBD_OPT_STARTTLS. The server never negotiates
	// below TLS 1.3 whatever the config says.
	TLSConfig *tls.Config
	// RequireTLS refuses every option but STARTTLS and ABORT until TLS
	// is up (NBD_REP_ERR_TLS_REQD; NBD_OPT_EXPORT_NAME, which cannot carry
	// an error, gets the connection closed). Without TLSConfig nothing
	// can be served.
	RequireTLS bool
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
	// Workers bounds the requests of one connection executed at once.
	Workers int
	// ConnBufferBytes bounds the payload bytes of one connection's
	// requests in flight (read into memory and not yet answered: WRITE
	// data, READ replies queued for the socket); the connection reads no
	// further request until some are answered. Default 8 MiB (32 of
	// nbdcopy's 256 KiB requests; it keeps 64 in flight per connection).
	ConnBufferBytes int64
	// BufferBytes bounds the same across all connections, so the host's
	// memory does not grow with the number of clients (default 192 MiB).
	// A request larger than a bound waits until it is the only one.
	BufferBytes int64
	// Authorize, when set, is asked before an export is opened or listed
	// (NBD_OPT_EXPORT_NAME, INFO, GO, LIST, the meta-context options):
	// an error refuses that export with NBD_REP_ERR_POLICY and hides it
	// from LIST. peer is the TLS state, nil before or without STARTTLS.
	// The caller decides what a peer may open (blockwise: tickets bound
	// to client certificates); the server only asks.
	Authorize func(ctx context.Context, peer *tls.ConnectionState, export string) error
	// NoInlineReads runs every READ on a worker even when the Export is
	// a NoWaitReader (the server's behaviour before reads ran inline;
	// for tests and side-by-side measurements).
	NoInlineReads bool
	// HandshakeTimeout bounds the whole option haggling of a connection,
	// so a silent client cannot hold a goroutine forever (default 30 s).
	HandshakeTimeout time.Duration
}

// Server serves the exports of an Exporter over any number of listeners.
type Server struct {
	exp  Exporter
	opts ServerOptions
	log  *slog.Logger
	bufs [bufClasses]sync.Pool // *[]byte, by capacity class (see getBuf)
	// budget is ServerOptions.BufferBytes: payload bytes in flight.
	budget *semaphore.Weighted

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	wg        sync.WaitGroup // one per live connection goroutine
}

// NewServer returns a Server for exp. It does nothing until Serve.
func NewServer(exp Exporter, opts ServerOptions) *Server {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 30 * time.Second
	}
	if opts.ConnBufferBytes <= 0 {
		opts.ConnBufferBytes = 8 << 20
	}
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = 192 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		exp: exp, opts: opts, log: log, budget: semaphore.NewWeighted(opts.BufferBytes),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
	}
}

// Serve accepts connections on l until Shutdown or Close, then returns
// ErrServerClosed. It works with TCP and unix listeners alike; l is
// closed on return.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		if !s.startConn(nc) {
			nc.Close()
			return ErrServerClosed
		}
	}
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		l.Close()
		return true
	}
	if s.closing {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) startConn(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	c := newServerConn(s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	return true
}

// Shutdown stops the listeners, lets requests in flight finish, flushes
// and closes each export and closes every connection. Connections still in
// the handshake are dropped. If ctx ends first, the remaining connections
// are closed hard and ctx's error is returned; Shutdown still waits for
// Export calls in progress to return, as the server cannot abandon them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return fmt.Errorf("nbd: shutdown: %w", ctx.Err())
	}
}

// Close stops the listeners and closes all connections at once, without
// waiting for requests in flight. Exports are still closed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.kill()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Buffer classes: capacities minBuf << i, up to DefaultMaxPayload. One
// pool per class, so a 256 KiB read never finds only 4 KiB buffers and
// allocates (one mixed pool dropped every buffer that was too small).
const (
	minBufShift = 12               // 4 KiB
	bufClasses  = 26 - minBufShift // 4 KiB .. 32 MiB (DefaultMaxPayload)
)

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a pooled buffer of length n; n is at most the maximum
// payload.
func (s *Server) getBuf(n int) *[]byte {
	k := bufClass(n)
	if v, ok := s.bufs[k].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(k+minBufShift))
	return &b
}

func (s *Server) putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := cap(*b)
	if k := bufClass(c); k < bufClasses && c == 1<<(k+minBufShift) {
		s.bufs[k].Put(b)
	}
}

// discard reads and drops n bytes, used to stay in sync past a payload
// we refuse.
func discard(r io.Reader, n int64) error {
	_, err := io.CopyN(io.Discard, r, n)
	return err
}

package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testcert"
)

var bothContexts = []string{ContextBaseAllocation, dirtyContext}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// transports returns URIs for every way a client can reach ts.
func transports(ts *testServer, pki *testcert.PKI) map[string]struct {
	uri  string
	opts *ClientOptions
} {
	type tr = struct {
		uri  string
		opts *ClientOptions
	}
	m := map[string]tr{
		"unix": {ts.unixURI("disk"), &ClientOptions{MetaContexts: bothContexts}},
		"tcp":  {ts.tcpURI("disk"), &ClientOptions{MetaContexts: bothContexts}},
	}
	if pki != nil {
		m["tls-tcp"] = tr{strings.Replace(ts.tcpURI("disk"), "nbd:", "nbds:", 1),
			&ClientOptions{MetaContexts: bothContexts, TLSConfig: pki.ClientTLS()}}
		tc := pki.ClientTLS().Clone()
		tc.ServerName = "localhost"
		m["tls-unix"] = tr{strings.Replace(ts.unixURI("disk"), "nbd+unix:", "nbds+unix:", 1),
			&ClientOptions{MetaContexts: bothContexts, TLSConfig: tc}}
	}
	return m
}

func TestClientServerIO(t *testing.T) {
	checkGoroutines(t)
	pki := testcert.New(t)
	exp := newMemExport(4 << 20)
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{TLSConfig: pki.ServerTLS()})
	for name, tr := range transports(ts, pki) {
		t.Run(name, func(t *testing.T) {
			c := dial(t, tr.uri, tr.opts)
			exerciseIO(t, c)
		})
	}
}

func exerciseIO(t *testing.T, c *Client) {
	ctx := context.Background()
	if c.Size() != 4<<20 || c.Flags()&FlagReadOnly != 0 || c.Flags()&FlagCanMultiConn == 0 {
		t.Fatalf("size %d flags %#x", c.Size(), c.Flags())
	}
	if c.BlockSizes().Maximum != DefaultMaxPayload {
		t.Fatalf("block sizes %+v", c.BlockSizes())
	}
	data := pattern(300<<10, 3)
	must(t, c.Zero(ctx, 0, c.Size(), true, false))
	must(t, c.WriteAt(ctx, data, 1<<20, true))
	got := make([]byte, len(data)+8192)
	must(t, c.ReadAt(ctx, got, 1<<20-4096))
	want := append(append(make([]byte, 4096), data...), make([]byte, 4096)...)
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	must(t, c.Zero(ctx, 1<<20, 64<<10, true, false))
	must(t, c.Trim(ctx, 1<<20+64<<10, 4096))
	must(t, c.Flush(ctx))
	ext, err := c.BlockStatus(ctx, ContextBaseAllocation, 0, c.Size(), false)
	must(t, err)
	wantExt := []Extent{
		{1<<20 + 68<<10, StateHole | StateZero},
		{300<<10 - 68<<10, 0},
		{uint64(c.Size()) - (1<<20 + 300<<10), StateHole | StateZero},
	}
	if !slices.Equal(ext, wantExt) {
		t.Fatalf("base:allocation %v, want %v", ext, wantExt)
	}
	ext, err = c.BlockStatus(ctx, dirtyContext, 0, c.Size(), true)
	must(t, err)
	if !slices.Equal(ext, []Extent{{uint64(c.Size()), StateDirty}}) { // the Zero above dirtied all
		t.Fatalf("dirty reqOne %v", ext)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentRequestsAndConnections(t *testing.T) {
	checkGoroutines(t)
	exp := newMemExport(8 << 20)
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{})
	ctx := context.Background()
	const conns, perConn, size = 4, 8, 128 << 10
	clients := make([]*Client, conns)
	for i := range clients {
		clients[i] = dial(t, ts.tcpURI("disk"), nil)
	}
	var wg sync.WaitGroup
	for i := range conns * perConn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%conns]
			if err := c.WriteAt(ctx, pattern(size, byte(i)), int64(i*size), false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		must(t, c.Flush(ctx))
	}
	for i := range conns * perConn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, size)
			if err := clients[(i+1)%conns].ReadAt(ctx, got, int64(i*size)); err != nil {
				t.Error(err)
			} else if !bytes.Equal(got, pattern(size, byte(i))) {
				t.Errorf("block %d differs", i)
			}
		}()
	}
	wg.Wait()
}

// largeExport checks reads and writes larger than the maximum payload are
// split by the client.
func TestLargeTransfers(t *testing.T) {
	checkGoroutines(t)
	exp := newMemExport(3 << 20)
	exp.sizes = BlockSizes{Minimum: 512, Preferred: 4096, Maximum: 256 << 10}
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{})
	c := dial(t, ts.unixURI("disk"), nil)
	if c.BlockSizes() != exp.sizes {
		t.Fatalf("block sizes %+v", c.BlockSizes())
	}
	data := pattern(2<<20+512, 9)
	rand.Shuffle(len(data), func(i, j int) { data[i], data[j] = data[j], data[i] })
	must(t, c.WriteAt(context.Background(), data, 512, false))
	got := make([]byte, len(data))
	must(t, c.ReadAt(context.Background(), got, 512))
	if !bytes.Equal(got, data) {
		t.Fatal("differs")
	}
}

func TestServerErrors(t *testing.T) {
	checkGoroutines(t)
	rw := newMemExport(1 << 20)
	ro := newMemExport(1 << 20)
	ro.ro = true
	al := newMemExport(1 << 20)
	al.sizes = BlockSizes{Minimum: 512}
	bad := newMemExport(1 << 20)
	ts := startServer(t, map[string]*memExport{"rw": rw, "ro": ro, "al": al, "bad": bad}, ServerOptions{})
	ctx := context.Background()
	cl := map[string]*Client{}
	for _, n := range []string{"rw", "ro", "al", "bad"} {
		cl[n] = dial(t, ts.unixURI(n), &ClientOptions{MetaContexts: bothContexts})
	}
	ro.ro = false // the client now believes it may write: let the server refuse
	defer func() { ro.ro = true }()
	cl["ro"].flags = cl["ro"].flags&^FlagReadOnly | FlagSendTrim
	buf := make([]byte, 4096)
	tests := []struct {
		name string
		fail error
		do   func(c map[string]*Client) error
		code uint32
	}{
		{"read past end", nil, func(c map[string]*Client) error { return c["rw"].ReadAt(ctx, buf, 1<<20-100) }, EINVAL},
		{"write past end", nil, func(c map[string]*Client) error { return c["rw"].WriteAt(ctx, buf, 1<<20-100, false) }, ENOSPC},
		{"zero past end", nil, func(c map[string]*Client) error { return c["rw"].Zero(ctx, 1<<20, 1, true, false) }, ENOSPC},
		{"trim past end", nil, func(c map[string]*Client) error { return c["rw"].Trim(ctx, 1<<20-1, 2) }, EINVAL},
		{"status past end", nil, func(c map[string]*Client) error {
			_, err := c["rw"].BlockStatus(ctx, ContextBaseAllocation, 1<<20, 1, false)
			return err
		}, EINVAL},
		{"write read-only", nil, func(c map[string]*Client) error { return c["ro"].WriteAt(ctx, buf, 0, false) }, EPERM},
		{"trim read-only", nil, func(c map[string]*Client) error { return c["ro"].Trim(ctx, 0, 512) }, EPERM},
		{"misaligned read", nil, func(c map[string]*Client) error { return c["al"].ReadAt(ctx, buf[:100], 512) }, EINVAL},
		{"misaligned write", nil, func(c map[string]*Client) error { return c["al"].WriteAt(ctx, buf[:512], 100, false) }, EINVAL},
		{"backend read-only", ErrReadOnly, func(c map[string]*Client) error { return c["bad"].WriteAt(ctx, buf, 0, false) }, EPERM},
		{"backend range", ErrOutOfRange, func(c map[string]*Client) error { return c["bad"].ReadAt(ctx, buf, 0) }, EINVAL},
		{"backend misaligned", ErrMisaligned, func(c map[string]*Client) error { return c["bad"].Trim(ctx, 0, 1) }, EINVAL},
		{"backend unsupported", ErrNotSupported, func(c map[string]*Client) error { return c["bad"].Zero(ctx, 0, 1, true, true) }, ENOTSUP},
		{"backend no space", ErrNoSpace, func(c map[string]*Client) error { return c["bad"].WriteAt(ctx, buf, 0, true) }, ENOSPC},
		{"backend other", errors.New("disk on fire"), func(c map[string]*Client) error { return c["bad"].Flush(ctx) }, EIO},
		{"backend other status", fmt.Errorf("wrapped: %w", errors.New("x")), func(c map[string]*Client) error {
			_, err := c["bad"].BlockStatus(ctx, dirtyContext, 0, 1, false)
			return err
		}, EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad.setFail(tt.fail)
			defer bad.setFail(nil)
			err := tt.do(cl)
			var we *Error
			if !errors.As(err, &we) || we.Code != tt.code {
				t.Fatalf("got %v, want code %d", err, tt.code)
			}
		})
	}
	// The connections survive errors.
	for n, c := range cl {
		if err := c.ReadAt(ctx, buf[:512], 0); err != nil {
			t.Errorf("%s after errors: %v", n, err)
		}
	}
}

func TestDialErrors(t *testing.T) {
	checkGoroutines(t)
	pki := testcert.New(t)
	ts := startServer(t, map[string]*memExport{"disk": newMemExport(1 << 20)},
		ServerOptions{TLSConfig: pki.ServerTLS(), RequireTLS: true})
	ctx := context.Background()
	_, err := Dial(ctx, ts.unixURI("disk"), nil)
	if !errors.Is(err, ErrTLSRequired) {
		t.Errorf("plain dial to TLS-only server: %v", err)
	}
	tlsURI := strings.Replace(ts.tcpURI("nope"), "nbd:", "nbds:", 1)
	_, err = Dial(ctx, tlsURI, &ClientOptions{TLSConfig: pki.ClientTLS()})
	if !errors.Is(err, ErrUnknownExport) {
		t.Errorf("unknown export: %v", err)
	}
	_, err = Dial(ctx, strings.Replace(tlsURI, "127.0.0.1", "localhost", 1), &ClientOptions{})
	if err == nil {
		t.Errorf("TLS without our CA succeeded")
	}
	c := dial(t, strings.Replace(ts.tcpURI("disk"), "nbd:", "nbds:", 1), &ClientOptions{TLSConfig: pki.ClientTLS()})
	must(t, c.ReadAt(ctx, make([]byte, 512), 0))
	if _, err := c.BlockStatus(ctx, ContextBaseAllocation, 0, 512, false); !errors.Is(err, ErrNotSupported) {
		t.Errorf("block status without context: %v", err)
	}
}

// slowExport delays reads, to test cancellation and graceful shutdown.
type slowExport struct {
	*memExport
	delay time.Duration
}

func (s slowExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	time.Sleep(s.delay)
	return s.memExport.ReadAt(ctx, p, off)
}

func (s slowExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	time.Sleep(s.delay)
	return s.memExport.WriteAt(ctx, p, off, fua)
}

type slowExporter struct{ exp slowExport }

func (e slowExporter) Open(context.Context, string) (Export, error) { return e.exp, nil }
func (e slowExporter) List(context.Context) ([]ExportInfo, error)   { return nil, nil }

func startSlow(t *testing.T, delay time.Duration) (*Server, string, *memExport) {
	m := newMemExport(1 << 20)
	copy(m.data, pattern(1<<20, 1))
	srv := NewServer(slowExporter{slowExport{m, delay}}, ServerOptions{})
	dir := shortTempDir(t)
	l, err := netListenUnix(dir + "/s")
	must(t, err)
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return srv, "nbd+unix:///?socket=" + dir + "/s", m
}

func TestCancelKeepsStreamInSync(t *testing.T) {
	checkGoroutines(t)
	_, uri, m := startSlow(t, 100*time.Millisecond)
	c := dial(t, uri, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	p := make([]byte, 4096)
	if err := c.ReadAt(ctx, p, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled read: %v", err)
	}
	if !bytes.Equal(p, make([]byte, 4096)) {
		t.Fatal("abandoned buffer written")
	}
	for i := range 3 {
		must(t, c.ReadAt(context.Background(), p, int64(i*4096)))
		if !bytes.Equal(p, m.data[i*4096:(i+1)*4096]) {
			t.Fatalf("read %d after cancel differs", i)
		}
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	checkGoroutines(t)
	srv, uri, m := startSlow(t, 200*time.Millisecond)
	c := dial(t, uri, nil)
	errc := make(chan error, 1)
	go func() { errc <- c.WriteAt(context.Background(), pattern(4096, 5), 0, false) }()
	time.Sleep(50 * time.Millisecond) // the write is at the export now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, srv.Shutdown(ctx))
	if err := <-errc; err != nil {
		t.Fatalf("in-flight write: %v", err)
	}
	if !bytes.Equal(m.data[:4096], pattern(4096, 5)) || m.flushes.Load() == 0 || m.closes.Load() == 0 {
		t.Fatalf("write lost or export not flushed/closed: flushes %d closes %d", m.flushes.Load(), m.closes.Load())
	}
	if err := c.ReadAt(context.Background(), make([]byte, 512), 0); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("read after shutdown: %v", err)
	}
}

func TestZeroFlags(t *testing.T) {
	checkGoroutines(t)
	exp := newMemExport(1 << 20)
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{})
	c := dial(t, ts.unixURI("disk"), nil)
	ctx := context.Background()
	must(t, c.Zero(ctx, 0, 4096, true, false))
	must(t, c.Zero(ctx, 0, 4096, false, false))
	must(t, c.Zero(ctx, 0, 4096, true, true))
	must(t, c.Trim(ctx, 0, 4096))
	want := []string{"punch=true fast=false", "punch=false fast=false", "punch=true fast=true", "punch=true fast=false"}
	if got := exp.zeroCalls(); !slices.Equal(got, want) {
		t.Fatalf("Zero calls %q, want %q", got, want)
	}
}

func TestCloseWithRequestsInFlight(t *testing.T) {
	checkGoroutines(t)
	_, uri, _ := startSlow(t, 200*time.Millisecond)
	c := dial(t, uri, nil)
	errs := make(chan error, 5)
	for i := range 5 {
		go func() { errs <- c.ReadAt(context.Background(), make([]byte, 512), int64(i*512)) }()
	}
	time.Sleep(50 * time.Millisecond)
	must(t, c.Close())
	for range 5 {
		if err := <-errs; !errors.Is(err, ErrClientClosed) {
			t.Errorf("in-flight read after Close: %v", err)
		}
	}
	if err := c.Flush(context.Background()); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
}

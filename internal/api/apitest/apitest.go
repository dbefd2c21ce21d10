package apitest

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/nbd"
)

// Options choose what Start serves beside the API.
type Options struct {
	// NBD serves the datastore over NBD on a unix socket (Env.NBDSock)
	// and on TCPPaths TCP addresses of 127.0.0.1, one server each so a
	// test can stop one path. Without it the API advertises exports at
	// Dir/nbd.sock and 127.0.0.1:10809 that nothing serves.
	NBD      bool
	TCPPaths int
	// TLS, when set, is offered by the NBD servers (STARTTLS), and the
	// API advertises the TCP exports as TLS.
	TLS *tls.Config
	// Tickets makes the TCP paths what `blockwise serve --nbd-tcp` runs by
	// default: TLS 1.3 with a server certificate from the datastore's CA,
	// and a client certificate (a ticket from Env.Tickets) for every
	// connection, which opens its export only. TLS is then ignored.
	Tickets bool
	// Insecure serves TCP to anyone, as --nbd-tcp-insecure-no-auth does:
	// TLS offered with a certificate from the datastore's CA but not
	// required, and plain nbd:// URIs advertised beside nbds:// ones.
	Insecure bool
}

// Env is a running host: a fresh datastore, the API over a unix socket
// and, with Options.NBD, NBD servers.
type Env struct {
	Dir     string   // the datastore
	Sock    string   // the API socket
	NBDSock string   // the NBD unix socket (Options.NBD)
	TCP     []string // the NBD TCP addresses (Options.TCPPaths)
	Host    *host.Host
	Server  *api.Server
	Tickets *api.Tickets // the host's NBD tickets (issued through the API)
	Jobs    *jobs.Store  // the host's job history (Dir/jobs.db)
	Client  *client.Client

	opts    Options
	tcpOpts nbd.ServerOptions // the TCP paths' server options
	mu      sync.Mutex
	nbd     []*nbd.Server // [0] unix, then one per TCP path
}

// Start serves a fresh datastore; everything stops at the test's end.
// At most one Options.
func Start(t testing.TB, opts ...Options) *Env {
	t.Helper()
	e := &Env{Dir: t.TempDir()}
	if len(opts) > 0 {
		e.opts = opts[0]
	}
	ds, err := disk.OpenDatastore(e.Dir)
	if err != nil {
		t.Fatal(err)
	}
	e.Host = host.New(ds)
	if e.Jobs, err = jobs.Open(filepath.Join(e.Dir, "jobs.db"), jobs.Options{}); err != nil {
		t.Fatal(err)
	}
	// A short socket directory: t.TempDir names can pass the 108-byte limit.
	sockDir, err := os.MkdirTemp("", "bwapi")
	if err != nil {
		t.Fatal(err)
	}
	e.Sock = filepath.Join(sockDir, "api.sock")
	t.Cleanup(func() { e.stop(); os.RemoveAll(sockDir) })
	// Without NBD: as `blockwise serve --nbd-tcp 127.0.0.1:10809` advertises
	// it (TCP is TLS with a ticket); nothing listens there.
	exports := api.ExportConfig{UnixSocket: filepath.Join(e.Dir, "nbd.sock"), TCP: []string{"127.0.0.1:10809"}, TLS: true}
	var tcp []net.Listener
	if e.opts.NBD {
		e.NBDSock = filepath.Join(sockDir, "nbd.sock")
		for range e.opts.TCPPaths {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tcp = append(tcp, l)
			e.TCP = append(e.TCP, l.Addr().String())
		}
		exports = api.ExportConfig{UnixSocket: e.NBDSock, TCP: e.TCP,
			TLS: e.opts.TLS != nil || e.opts.Tickets || e.opts.Insecure, Insecure: e.opts.Insecure}
	}
	tokens := api.OpenTokens(e.Dir)
	e.Tickets = api.NewHostTickets(e.Host, tokens, exports)
	if e.opts.NBD {
		e.tcpOpts = e.tcpServerOptions(t)
		e.serve(e.listen(t, "unix", e.NBDSock), nbd.ServerOptions{}) // its mode is its protection
		for _, l := range tcp {
			e.serve(l, e.tcpOpts)
		}
	}
	e.Server = api.New(e.Host, api.Options{Tokens: tokens, Exports: exports, Tickets: e.Tickets, Jobs: e.Jobs})
	l, err := net.Listen("unix", e.Sock)
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	if e.Client, err = client.New("unix://"+e.Sock, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// stop shuts the API, the NBD servers and the host down.
func (e *Env) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.Server != nil {
		e.Server.Shutdown(ctx)
	}
	e.mu.Lock()
	for _, s := range e.nbd {
		s.Shutdown(ctx)
	}
	e.mu.Unlock()
	e.Host.Close()
	e.Jobs.Close()
}

// tcpServerOptions are the TCP paths' options: tickets (the datastore's
// CA signs the server certificate and vouches for the clients), or the
// given TLS offered to anyone.
func (e *Env) tcpServerOptions(t testing.TB) nbd.ServerOptions {
	t.Helper()
	if !e.opts.Tickets && !e.opts.Insecure {
		return nbd.ServerOptions{TLSConfig: e.opts.TLS}
	}
	ca, err := e.Tickets.CA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCert(nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.Insecure { // TLS offered, with the CA's certificate, to anyone
		return nbd.ServerOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}
	}
	cfg, err := e.Tickets.ServerTLS(cert)
	if err != nil {
		t.Fatal(err)
	}
	return nbd.ServerOptions{TLSConfig: cfg, RequireTLS: true, Authorize: e.Tickets.Authorize}
}

func (e *Env) listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve starts an NBD server of its own on l (one per path, so that a
// test can stop one).
func (e *Env) serve(l net.Listener, opts nbd.ServerOptions) {
	s := nbd.NewServer(e.Host, opts)
	go s.Serve(l)
	e.mu.Lock()
	e.nbd = append(e.nbd, s)
	e.mu.Unlock()
}

// UnixURI is the NBD URI of export on the unix socket.
func (e *Env) UnixURI(export string) string {
	return "nbd+unix:///" + export + "?socket=" + e.NBDSock
}

// TCPURI is the NBD URI of export on TCP path i (nbds:// when the
// paths speak TLS).
func (e *Env) TCPURI(i int, export string) string {
	scheme := "nbd"
	if e.opts.Tickets || e.opts.TLS != nil {
		scheme = "nbds"
	}
	return scheme + "://" + e.TCP[i] + "/" + export
}

// KillPath stops the server of TCP path i (its connections die) and
// returns a function that serves the path's address again.
func (e *Env) KillPath(t testing.TB, i int) (restart func()) {
	t.Helper()
	e.mu.Lock()
	s := e.nbd[1+i]
	e.mu.Unlock()
	s.Close()
	return func() {
		t.Helper()
		l := e.listen(t, "tcp", e.TCP[i])
		s := nbd.NewServer(e.Host, e.tcpOpts)
		e.mu.Lock()
		e.nbd[1+i] = s
		e.mu.Unlock()
		go s.Serve(l)
	}
}

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
	Client  *client.Client

	opts Options
	mu   sync.Mutex
	nbd  []*nbd.Server // [0] unix, then one per TCP path
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
	// A short socket directory: t.TempDir names can pass the 108-byte limit.
	sockDir, err := os.MkdirTemp("", "bwapi")
	if err != nil {
		t.Fatal(err)
	}
	e.Sock = filepath.Join(sockDir, "api.sock")
	t.Cleanup(func() { e.stop(); os.RemoveAll(sockDir) })
	exports := api.ExportConfig{UnixSocket: filepath.Join(e.Dir, "nbd.sock"), TCP: []string{"127.0.0.1:10809"}}
	if e.opts.NBD {
		e.NBDSock = filepath.Join(sockDir, "nbd.sock")
		e.serveNBD(t, "unix", e.NBDSock)
		for range e.opts.TCPPaths {
			e.TCP = append(e.TCP, e.serveNBD(t, "tcp", "127.0.0.1:0"))
		}
		exports = api.ExportConfig{UnixSocket: e.NBDSock, TCP: e.TCP, TLS: e.opts.TLS != nil}
	}
	e.Server = api.New(e.Host, api.Options{Tokens: api.OpenTokens(e.Dir), Exports: exports})
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
}

// serveNBD starts an NBD server of its own on a new listener and returns
// the listener's address.
func (e *Env) serveNBD(t testing.TB, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := nbd.NewServer(e.Host, nbd.ServerOptions{TLSConfig: e.opts.TLS})
	go s.Serve(l)
	e.mu.Lock()
	e.nbd = append(e.nbd, s)
	e.mu.Unlock()
	return l.Addr().String()
}

// UnixURI is the NBD URI of export on the unix socket.
func (e *Env) UnixURI(export string) string {
	return "nbd+unix:///" + export + "?socket=" + e.NBDSock
}

// TCPURI is the NBD URI of export on TCP path i.
func (e *Env) TCPURI(i int, export string) string { return "nbd://" + e.TCP[i] + "/" + export }

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
		l, err := net.Listen("tcp", e.TCP[i])
		if err != nil {
			t.Fatal(err)
		}
		s := nbd.NewServer(e.Host, nbd.ServerOptions{TLSConfig: e.opts.TLS})
		e.mu.Lock()
		e.nbd[1+i] = s
		e.mu.Unlock()
		go s.Serve(l)
	}
}

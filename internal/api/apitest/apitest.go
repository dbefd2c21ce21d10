package apitest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// Env is a running API over a unix socket.
type Env struct {
	Dir     string // the datastore
	Sock    string // the API socket
	Host    *host.Host
	Server  *api.Server
	Tickets *api.Tickets
	Client  *client.Client
}

// Start serves a fresh datastore; everything stops at the test's end.
func Start(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A short socket path: t.TempDir names can pass the 108-byte limit.
	sockDir, err := os.MkdirTemp("", "bwapi")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Dir: dir, Sock: filepath.Join(sockDir, "api.sock"), Host: host.New(ds)}
	// As `blockwise serve --nbd-tcp 127.0.0.1:10809` advertises it (TCP is
	// TLS with a ticket); nothing listens there.
	tokens := api.OpenTokens(dir)
	exports := api.ExportConfig{UnixSocket: filepath.Join(dir, "nbd.sock"), TCP: []string{"127.0.0.1:10809"}, TLS: true}
	e.Tickets = api.NewHostTickets(e.Host, tokens, exports)
	e.Server = api.New(e.Host, api.Options{Tokens: tokens, Exports: exports, Tickets: e.Tickets})
	l, err := net.Listen("unix", e.Sock)
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Server.Shutdown(ctx)
		e.Host.Close()
		os.RemoveAll(sockDir)
	})
	if e.Client, err = client.New("unix://"+e.Sock, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

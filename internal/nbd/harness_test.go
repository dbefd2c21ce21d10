package nbd

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testServer is a Server listening on a unix socket and on TCP loopback.
type testServer struct {
	srv  *Server
	exps *memExporter
	sock string
	tcp  string
	dir  string
}

func startServer(t testing.TB, exps map[string]*memExport, opts ServerOptions) *testServer {
	t.Helper()
	ts := &testServer{exps: &memExporter{exports: exps}, dir: shortTempDir(t)}
	ts.sock = filepath.Join(ts.dir, "s")
	ts.srv = NewServer(ts.exps, opts)
	ul, err := net.Listen("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.tcp = tl.Addr().String()
	var wg sync.WaitGroup
	for _, l := range []net.Listener{ul, tl} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ts.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		wg.Wait()
	})
	return ts
}

func (ts *testServer) unixURI(export string) string {
	return "nbd+unix:///" + url.PathEscape(export) + "?socket=" + ts.sock
}

func (ts *testServer) tcpURI(export string) string {
	return "nbd://" + ts.tcp + "/" + url.PathEscape(export)
}

func dial(t testing.TB, uri string, opts *ClientOptions) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, uri, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func netListenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }

package nbd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestNoLeakWhileServing checks that connections ending in every way
// give back their goroutines while the server keeps running.
func TestNoLeakWhileServing(t *testing.T) {
	checkGoroutines(t)
	ts, _ := rawServer(t, ServerOptions{})
	settle := func() int {
		time.Sleep(20 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	base := settle()
	ends := map[string]func(t *testing.T){
		"client close": func(t *testing.T) {
			c := dial(t, ts.unixURI("disk"), nil)
			must(t, c.ReadAt(context.Background(), make([]byte, 4096), 0))
			c.Close()
		},
		"vanish in handshake": func(t *testing.T) {
			r := rawDial(t, ts, clientFixedNew)
			r.opt(optList, nil)
			r.c.Close()
		},
		"vanish mid payload": func(t *testing.T) {
			r := transmission(t, ts, "disk", true)
			r.req(0, cmdWrite, 1, 0, 8192, make([]byte, 100))
			r.c.Close()
		},
		"vanish with requests queued": func(t *testing.T) {
			r := transmission(t, ts, "disk", true)
			for i := range 100 {
				r.req(0, cmdRead, uint64(i), 0, 256<<10, nil)
			}
			r.c.Close()
		},
		"abort": func(t *testing.T) {
			r := rawDial(t, ts, clientFixedNew)
			r.expectReply(optAbort, nil, repAck)
			r.c.Close()
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			for range 5 {
				end(t)
			}
			deadline := time.Now().Add(3 * time.Second)
			for settle() > base+1 { // +1: this subtest's own goroutine
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), base)
				}
			}
		})
	}
}

// TestExportNameFallback dials a server that refuses NBD_OPT_GO, as old
// servers do, and expects the client to use NBD_OPT_EXPORT_NAME.
func TestExportNameFallback(t *testing.T) {
	checkGoroutines(t)
	srv, cli := net.Pipe()
	defer srv.Close()
	go oldServer(srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := newClient(ctx, cli, &URI{Export: "old"}, &ClientOptions{})
	must(t, err)
	if c.Size() != 12345*512 || c.Flags() != FlagHasFlags|FlagReadOnly || c.structured {
		t.Fatalf("size %d flags %#x structured %v", c.Size(), c.Flags(), c.structured)
	}
	c.Close()
}

// oldServer speaks fixed newstyle without GO or structured replies and
// wants the 124 zero bytes after EXPORT_NAME.
func oldServer(nc net.Conn) {
	hello := binary.BigEndian.AppendUint64(nil, nbdMagic)
	hello = binary.BigEndian.AppendUint64(hello, optMagic)
	nc.Write(binary.BigEndian.AppendUint16(hello, flagFixedNew))
	io.ReadFull(nc, make([]byte, 4))
	for {
		h := make([]byte, 16)
		if _, err := io.ReadFull(nc, h); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(h[8:])
		io.ReadFull(nc, make([]byte, binary.BigEndian.Uint32(h[12:])))
		if opt == optExportName {
			b := binary.BigEndian.AppendUint64(nil, 12345*512)
			b = binary.BigEndian.AppendUint16(b, FlagHasFlags|FlagReadOnly)
			nc.Write(append(b, make([]byte, 124)...))
			io.Copy(io.Discard, nc)
			return
		}
		nc.Write(fakeOptReply(opt, repErrUnsup, nil))
	}
}

// TestShutdownIdleConnections shuts down with one connection in the
// handshake and one idle in transmission: both are closed promptly and
// the transmission's export is flushed and closed.
func TestShutdownIdleConnections(t *testing.T) {
	checkGoroutines(t)
	exp := newMemExport(1 << 20)
	exps := &memExporter{exports: map[string]*memExport{"disk": exp}}
	srv := NewServer(exps, ServerOptions{})
	l, err := netListenUnix(shortTempDir(t) + "/s")
	must(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	hs, err := net.Dial("unix", l.Addr().String())
	must(t, err)
	defer hs.Close()
	io.ReadFull(hs, make([]byte, 18)) // greeted: the server is in the handshake
	c, err := Dial(context.Background(), "nbd+unix:///disk?socket="+l.Addr().String(), nil)
	must(t, err)
	defer c.Close()
	must(t, c.WriteAt(context.Background(), []byte{1}, 0, false))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	must(t, srv.Shutdown(ctx))
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	hs.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := hs.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("handshake connection: %v", err)
	}
	if exp.flushes.Load() != 1 || exp.closes.Load() != 1 {
		t.Fatalf("flushes %d closes %d", exp.flushes.Load(), exp.closes.Load())
	}
	if err := c.Flush(context.Background()); err == nil {
		t.Fatal("client still works after shutdown")
	}
}

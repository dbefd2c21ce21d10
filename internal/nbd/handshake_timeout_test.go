package nbd

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuf is a log sink the server's goroutines may write concurrently.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A client that stops answering mid-handshake is cut at HandshakeTimeout,
// and the server's log says so: the client itself only sees the socket
// close ("server disconnected unexpectedly" in libnbd).
func TestHandshakeTimeoutLogged(t *testing.T) {
	var logs lockedBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ts := startServer(t, map[string]*memExport{"a": newMemExport(1 << 20)},
		ServerOptions{HandshakeTimeout: 300 * time.Millisecond, Logger: log})
	nc, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello := make([]byte, 18)
	if _, err := io.ReadFull(nc, hello); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent client: read %v, want EOF (closed by the server)", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the 300 ms timeout", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "handshake timed out") {
		if time.Now().After(deadline) {
			t.Fatalf("no timeout in the log: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A client that finishes its handshake in time is not logged.
	before := strings.Count(logs.String(), "handshake timed out")
	c := dial(t, ts.unixURI("a"), nil)
	c.Close()
	if n := strings.Count(logs.String(), "handshake timed out"); n != before {
		t.Fatalf("a good client was logged as timed out: %q", logs.String())
	}
}

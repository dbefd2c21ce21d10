package qmp

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQEMU serves one QMP connection from script: for each command line
// read, the reply lines (with "ID" replaced by the request's id).
func fakeQEMU(t *testing.T, greeting string, replies ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if greeting != "" {
			c.Write([]byte(greeting + "\n"))
		}
		r := bufio.NewReader(c)
		for _, rep := range replies {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			id := line[strings.Index(line, `"id":`)+5:]
			id = strings.TrimRight(id[:strings.IndexAny(id, ",}")], " ")
			c.Write([]byte(strings.ReplaceAll(rep, "ID", id) + "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}()
	return sock
}

// TestClient covers the handshake, replies, QEMU's errors, events in
// between and garbage lines, through a scripted peer (the real QEMU is
// tested in cmd/blockwise's TestQEMUSource and testvm's own test).
func TestClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sock := fakeQEMU(t, `{"QMP": {"version": {}}}`,
		`{"return": {}, "id": ID}`,
		`{"event": "STOP", "data": {}}`+"\nnot json\n"+`{"return": {"running": true}, "id": ID}`,
		`{"error": {"class": "GenericError", "desc": "no such thing"}, "id": ID}`)
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var st struct{ Running bool }
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil || !st.Running {
		t.Fatalf("query-status: %+v %v", st, err)
	}
	if ev := <-c.Events(); ev.Name != "STOP" {
		t.Fatalf("event %+v", ev)
	}
	err = c.Execute(ctx, "frob", map[string]any{"x": 1}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !errors.Is(err, ErrCommand) {
		t.Fatalf("error reply: %v", err)
	}
	if err := c.Execute(ctx, "more", nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after the peer closed: %v", err)
	}
}

func TestDialNoGreeting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sock := fakeQEMU(t, `{"hello": 1}`)
	if _, err := Dial(ctx, sock); !errors.Is(err, ErrProtocol) {
		t.Fatalf("want ErrProtocol, got %v", err)
	}
}

// FuzzDecode: any reply line decodes to a value or an error, never a
// panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"return": 3, "id": 1}`, `{"error": {"class": "X", "desc": "y"}, "id": 2}`,
		`{"event": "E", "data": null}`, `{"return": "frozen"}`, `{`, `[]`, `{"id": -1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message
		if err := jsonUnmarshal(b, &m); err != nil {
			return
		}
		var out any
		_ = decode("x", m, &out)
	})
}

package fsutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.sock")
	os.WriteFile(path, nil, 0o666) // a stale socket of a dead server
	for _, c := range []struct {
		mode os.FileMode
		gid  int
	}{{0o600, -1}, {0o660, os.Getgid()}} {
		l, err := ListenUnix(path, c.mode, c.gid)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != c.mode || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket %v %v, want %v", fi.Mode(), err, c.mode)
		}
		if l.Addr().String() != path {
			t.Fatalf("Addr %s", l.Addr())
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		l.Close()
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("socket left after Close: %v", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("left in the directory: %v", ents)
		}
	}
}

package fsutil

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

func TestMapRead(t *testing.T) {
	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct{ off, n int64 }{{0, 1}, {0, 3 << 20}, {5000, 10000}, {64 << 10, 1 << 20}, {3<<20 - 1, 1}} {
		m, err := MapRead(f, c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Bytes, data[c.off:c.off+c.n]) {
			t.Errorf("map %d+%d differs from the file", c.off, c.n)
		}
		first, last := uintptr(unsafe.Pointer(&m.Bytes[0])), uintptr(unsafe.Pointer(&m.Bytes[len(m.Bytes)-1]))
		if !m.Contains(first) || !m.Contains(last) || m.Contains(last+uintptr(os.Getpagesize())) || m.Contains(0) {
			t.Errorf("map %d+%d: Contains wrong at its edges", c.off, c.n)
		}
		if err := m.Close(); err != nil || m.Bytes != nil || m.Contains(first) {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	}
	for _, c := range []struct{ off, n int64 }{{-1, 10}, {0, 0}} {
		if _, err := MapRead(f, c.off, c.n); err == nil {
			t.Errorf("map %d+%d: no error", c.off, c.n)
		}
	}
}

package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// RunTests runs the conformance suite. newBackend must return a fresh,
// empty backend for each call.
func RunTests(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, backend.Backend)
	}{
		{"SaveLoad", testSaveLoad},
		{"Ranges", testRanges},
		{"NotFound", testNotFound},
		{"Exists", testExists},
		{"List", testList},
		{"Remove", testRemove},
		{"InvalidHandle", testInvalid},
		{"ConcurrentSaves", testConcurrentSaves},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			defer be.Close()
			tc.fn(t, be)
		})
	}
}

var ctx = context.Background()

func h(t backend.FileType, name string) backend.Handle { return backend.Handle{Type: t, Name: name} }

func load(t *testing.T, be backend.Backend, hd backend.Handle, off, n int64) []byte {
	t.Helper()
	b, err := backend.LoadAll(ctx, be, hd, off, n)
	if err != nil {
		t.Fatalf("load %v %d+%d: %v", hd, off, n, err)
	}
	return b
}

func testSaveLoad(t *testing.T, be backend.Backend) {
	for _, typ := range backend.Types {
		name := "ab0123"
		if typ == backend.Config {
			name = "config"
		}
		data := []byte("payload of " + string(typ))
		if err := be.Save(ctx, h(typ, name), data); err != nil {
			t.Fatalf("save %s: %v", typ, err)
		}
		data[0] = 'X' // the backend must not keep our buffer
		if got := load(t, be, h(typ, name), 0, 0); string(got) != "payload of "+string(typ) {
			t.Fatalf("load %s: got %q", typ, got)
		}
		fi, err := be.Stat(ctx, h(typ, name))
		if err != nil || fi.Size != int64(len(data)) || fi.Name != name {
			t.Fatalf("stat %s: %+v %v", typ, fi, err)
		}
	}
	// Pack-sized objects, page-aligned in memory or not, whole blocks or
	// not (the local backend writes these around the page cache).
	for i, n := range []int{3 * 4096, 1<<20 + 123} {
		for skew := range 2 {
			buf := fsutil.AlignedBuffer(n + 1)[skew : n+skew]
			for j := range buf {
				buf[j] = byte(j*7 + i + skew)
			}
			want := bytes.Clone(buf)
			name := fmt.Sprintf("cc%02d%02d", i, skew)
			if err := be.Save(ctx, h(backend.Data, name), buf); err != nil {
				t.Fatal(err)
			}
			clear(buf)
			if got := load(t, be, h(backend.Data, name), 0, 0); !bytes.Equal(got, want) {
				t.Fatalf("large object %d bytes (skew %d) loaded differently", n, skew)
			}
		}
	}
	if err := be.Save(ctx, h(backend.Data, "empty"), nil); err != nil {
		t.Fatal(err)
	}
	if got := load(t, be, h(backend.Data, "empty"), 0, 0); len(got) != 0 {
		t.Fatalf("empty object loaded %d bytes", len(got))
	}
}

func testRanges(t *testing.T, be backend.Backend) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	hd := h(backend.Data, "range")
	if err := be.Save(ctx, hd, data); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int64 }{{0, 0}, {0, 1}, {10, 0}, {999, 1}, {500, 500}, {1000, 0}, {123, 456}} {
		want := data[r.off:]
		if r.n > 0 {
			want = data[r.off : r.off+r.n]
		}
		if got := load(t, be, hd, r.off, r.n); !bytes.Equal(got, want) {
			t.Errorf("range %d+%d: got %d bytes, want %d", r.off, r.n, len(got), len(want))
		}
	}
	for _, r := range []struct{ off, n int64 }{{1001, 0}, {990, 20}, {-1, 5}, {0, -1}} {
		if rd, err := be.Load(ctx, hd, r.off, r.n); err == nil {
			b, rerr := io.ReadAll(rd)
			rd.Close()
			if rerr == nil {
				t.Errorf("range %d+%d past end: got %d bytes and no error", r.off, r.n, len(b))
			}
		}
	}
}

func testNotFound(t *testing.T, be backend.Backend) {
	hd := h(backend.Index, "missing")
	if _, err := be.Load(ctx, hd, 0, 0); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("load: %v", err)
	}
	if _, err := be.Stat(ctx, hd); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stat: %v", err)
	}
	if err := be.Remove(ctx, hd); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("remove: %v", err)
	}
}

func testExists(t *testing.T, be backend.Backend) {
	hd := h(backend.Manifests, "m1")
	if err := be.Save(ctx, hd, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, hd, []byte("second")); !errors.Is(err, backend.ErrExists) {
		t.Fatalf("second save: want ErrExists, got %v", err)
	}
	if got := load(t, be, hd, 0, 0); string(got) != "first" {
		t.Fatalf("object overwritten: %q", got)
	}
}

func names(t *testing.T, be backend.Backend, typ backend.FileType) []string {
	t.Helper()
	var ns []string
	err := be.List(ctx, typ, func(fi backend.FileInfo) error {
		ns = append(ns, fmt.Sprintf("%s:%d", fi.Name, fi.Size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ns)
	return ns
}

func testList(t *testing.T, be backend.Backend) {
	for i, n := range []string{"aa01", "ab02", "ff03", "0004"} {
		if err := be.Save(ctx, h(backend.Data, n), make([]byte, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Save(ctx, h(backend.Index, "i1"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(names(t, be, backend.Data))
	if want := "[0004:3 aa01:0 ab02:1 ff03:2]"; got != want {
		t.Errorf("list data: %s, want %s", got, want)
	}
	if got := fmt.Sprint(names(t, be, backend.Index)); got != "[i1:1]" {
		t.Errorf("list index: %s", got)
	}
	if got := names(t, be, backend.Locks); len(got) != 0 {
		t.Errorf("list locks: %v", got)
	}
	stop := errors.New("stop")
	if err := be.List(ctx, backend.Data, func(backend.FileInfo) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("list callback error not returned: %v", err)
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	hd := h(backend.Data, "abcdef")
	if err := be.Save(ctx, hd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, hd); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, hd); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat after remove: %v", err)
	}
	if got := names(t, be, backend.Data); len(got) != 0 {
		t.Fatalf("listed after remove: %v", got)
	}
	// A removed name can be created again.
	if err := be.Save(ctx, hd, []byte("y")); err != nil {
		t.Fatal(err)
	}
}

func testInvalid(t *testing.T, be backend.Backend) {
	for _, hd := range []backend.Handle{h("bogus", "x1"), h(backend.Data, ""), h(backend.Data, "a"), h(backend.Index, "../x"), h(backend.Index, "a/b")} {
		if err := be.Save(ctx, hd, []byte("x")); err == nil {
			t.Errorf("save %v accepted", hd)
		}
	}
}

// testConcurrentSaves races writers on the same names: exactly one must
// win each name, the others get ErrExists, and readers see whole objects.
func testConcurrentSaves(t *testing.T, be backend.Backend) {
	const writers, objects = 8, 16
	var wg sync.WaitGroup
	wins := make([]int, objects)
	var mu sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range objects {
				data := bytes.Repeat([]byte{byte(w)}, 4096)
				err := be.Save(ctx, h(backend.Data, fmt.Sprintf("c%02d", o)), data)
				switch {
				case err == nil:
					mu.Lock()
					wins[o]++
					mu.Unlock()
				case !errors.Is(err, backend.ErrExists):
					t.Errorf("save: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for o, n := range wins {
		if n != 1 {
			t.Errorf("object %d: %d winners", o, n)
		}
		got := load(t, be, h(backend.Data, fmt.Sprintf("c%02d", o)), 0, 0)
		if len(got) != 4096 || !bytes.Equal(got, bytes.Repeat(got[:1], 4096)) {
			t.Errorf("object %d torn", o)
		}
	}
}

package fsutil

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestDirectFile writes a mix of aligned, unaligned and short pieces from
// aligned and unaligned memory, concurrently, on the test's file system
// and on tmpfs (which refuses O_DIRECT), and compares the file with a
// model.
func TestDirectFile(t *testing.T) {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "bwdirect")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(shm) })
			dirs["tmpfs"] = shm
		}
	}
	for name, dir := range dirs {
		for _, mode := range []string{"direct", "unsupported", "disabled"} {
			t.Run(name+"/"+mode, func(t *testing.T) { testDirectFile(t, dir, mode) })
		}
	}
}

func testDirectFile(t *testing.T, dir, mode string) {
	const size = 8 << 20
	d, err := OpenDirect(filepath.Join(dir, mode), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	switch mode {
	case "unsupported": // as on a file system that refuses O_DIRECT at open
		d.direct.Close()
		d.direct = nil
	case "disabled": // as after a direct write failed with EINVAL
		d.disabled.Store(true)
	}
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	type piece struct {
		off  int64
		data []byte
	}
	var pieces []piece
	for off := int64(0); off < size; {
		n := int64([]int{512, 4096, 65536, 3 << 20, 5000, 1 << 20}[rng.IntN(6)])
		n = min(n, size-off)
		buf := AlignedBuffer(int(n) + 1)[:n+1]
		if rng.IntN(2) == 0 {
			buf = buf[1:] // unaligned memory: goes through the bounce buffer
		}
		buf = buf[:n]
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		copy(model[off:], buf)
		pieces = append(pieces, piece{off, buf})
		off += n
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pieces))
	for _, p := range pieces {
		wg.Go(func() {
			if n, err := d.WriteAt(p.data, p.off); err != nil || n != len(p.data) {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(d.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("file differs from the model")
	}
	t.Logf("%s: direct I/O %v", dir, d.direct != nil && !d.disabled.Load())
}

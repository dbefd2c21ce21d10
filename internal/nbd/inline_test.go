package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"time"
)

// TestInlineWritesPipelined sends, without waiting for any reply, writes
// (run by the reader itself, transmit.go inline) interleaved with reads of
// what an earlier write stored, FUA writes and flushes (run by workers)
// on one connection. Every request must be answered exactly once with its
// own handle, in any order, and every read must return the data its
// preceding non-FUA write stored: a write the reader runs completes
// before the reader takes the next request.
func TestInlineWritesPipelined(t *testing.T) {
	checkGoroutines(t)
	ts, exp := rawServer(t, ServerOptions{Workers: 4})
	r := transmission(t, ts, "disk", false)
	const n = 64
	kinds := map[uint64]uint16{}
	for i := range uint64(n) {
		off := i * 4096
		var flags uint16
		if i%8 == 7 {
			flags = cmdFlagFUA
		}
		r.req(flags, cmdWrite, 3*i, off, 4096, pattern(4096, byte(i)))
		r.req(0, cmdRead, 3*i+1, off, 4096, nil)
		kinds[3*i], kinds[3*i+1] = cmdWrite, cmdRead
		if i%16 == 15 {
			r.req(0, cmdFlush, 3*i+2, 0, 0, nil)
			kinds[3*i+2] = cmdFlush
		}
	}
	for len(kinds) > 0 {
		h := r.read(16)
		handle := binary.BigEndian.Uint64(h[8:])
		typ, ok := kinds[handle]
		if binary.BigEndian.Uint32(h) != simpleMagic || !ok {
			t.Fatalf("unexpected reply %x (answered twice or never asked)", h)
		}
		delete(kinds, handle)
		if code := binary.BigEndian.Uint32(h[4:]); code != 0 {
			t.Fatalf("request %d (cmd %d) failed: %d", handle, typ, code)
		}
		if typ == cmdRead {
			// After a FUA write (a worker's) the read may or may not see it.
			if got := r.read(4096); handle/3%8 != 7 && !bytes.Equal(got, pattern(4096, byte(handle/3))) {
				t.Fatalf("read %d does not see the write before it", handle)
			}
		}
	}
	if got := exp.bytes()[:n*4096]; !bytes.Equal(got[(n-1)*4096:], pattern(4096, n-1)) {
		t.Fatal("last write not stored")
	}
}

// gatedExport holds FUA writes until release is closed.
type gatedExport struct {
	*memExport
	release chan struct{}
}

func (g gatedExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if fua {
		<-g.release
	}
	return g.memExport.WriteAt(ctx, p, off, fua)
}

type gatedExporter struct{ exp gatedExport }

func (e gatedExporter) Open(context.Context, string) (Export, error) { return e.exp, nil }
func (e gatedExporter) List(context.Context) ([]ExportInfo, error)   { return nil, nil }

// TestFUAWriteNotInline: a FUA write waits for the disk, so it goes to a
// worker; a read sent after it on the same connection is answered while
// it is still held.
func TestFUAWriteNotInline(t *testing.T) {
	checkGoroutines(t)
	g := gatedExport{newMemExport(1 << 20), make(chan struct{})}
	srv := NewServer(gatedExporter{g}, ServerOptions{})
	dir := shortTempDir(t)
	l, err := netListenUnix(dir + "/s")
	must(t, err)
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	c := dial(t, "nbd+unix:///?socket="+dir+"/s", nil)
	werr := make(chan error, 1)
	go func() { werr <- c.WriteAt(context.Background(), pattern(4096, 9), 0, true) }()
	time.Sleep(20 * time.Millisecond) // the FUA write is at the export
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	must(t, c.ReadAt(ctx, make([]byte, 4096), 8192))
	select {
	case err := <-werr:
		t.Fatalf("FUA write finished while held: %v", err)
	default:
	}
	close(g.release)
	must(t, <-werr)
}

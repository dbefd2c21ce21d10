package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// cacheExport is a memExport with a simulated page cache: a read of a
// cold 4 KiB block through ReadAt waits for the "device" (held until
// device is closed, or for a short random delay) and warms the block;
// ReadAtNoWait serves warm blocks only and fails with ErrWouldBlock
// otherwise, or at random when flaky is set.
type cacheExport struct {
	*memExport
	device <-chan struct{} // nil: cold reads sleep instead
	flaky  bool

	mu   sync.Mutex
	cold map[int64]bool

	inline, worker atomic.Int64 // reads served by ReadAtNoWait / ReadAt
}

func newCacheExport(m *memExport, cold ...int64) *cacheExport {
	e := &cacheExport{memExport: m, cold: map[int64]bool{}}
	for _, b := range cold {
		e.cold[b] = true
	}
	return e
}

var _ NoWaitReader = (*cacheExport)(nil)

func (e *cacheExport) anyCold(off int64, n int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for b := off / 4096; b*4096 < off+int64(n); b++ {
		if e.cold[b] {
			return true
		}
	}
	return false
}

func (e *cacheExport) warm(off int64, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for b := off / 4096; b*4096 < off+int64(n); b++ {
		delete(e.cold, b)
	}
}

func (e *cacheExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	e.worker.Add(1)
	if e.anyCold(off, len(p)) {
		if e.device != nil {
			<-e.device
		} else {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
		e.warm(off, len(p))
	}
	return e.memExport.ReadAt(ctx, p, off)
}

func (e *cacheExport) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	if e.anyCold(off, len(p)) || e.flaky && rand.IntN(5) == 0 {
		clear(p) // content unspecified on failure: make a wrong use visible
		return ErrWouldBlock
	}
	e.inline.Add(1)
	return e.memExport.ReadAt(ctx, p, off)
}

type cacheExporter struct{ e *cacheExport }

func (x cacheExporter) Open(context.Context, string) (Export, error) { return x.e, nil }
func (x cacheExporter) List(context.Context) ([]ExportInfo, error)   { return nil, nil }

func serveExport(t *testing.T, exp Exporter, opts ServerOptions) string {
	t.Helper()
	srv := NewServer(exp, opts)
	dir := shortTempDir(t)
	l, err := netListenUnix(dir + "/s")
	must(t, err)
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return dir + "/s"
}

// TestInlineReadMissGoesToWorker: a READ of cached data is served by the
// connection's reader (ReadAtNoWait), a READ of data not in the cache
// goes to a worker, and while the device holds that one the reads and
// writes sent after it on the same connection are answered — in order of
// arrival for those the reader runs, each read seeing the write before
// it. With NoInlineReads every read goes to a worker. It fails if a miss
// is served on the reader (the reader then waits for the device and
// nothing after the miss is answered).
func TestInlineReadMissGoesToWorker(t *testing.T) {
	for _, off := range []bool{false, true} {
		name := map[bool]string{false: "inline", true: "off"}[off]
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			device := make(chan struct{})
			release := sync.OnceFunc(func() { close(device) })
			e := newCacheExport(filledExport(sparseImage(2<<20)), 0, 1)
			e.device = device
			sock := serveExport(t, cacheExporter{e}, ServerOptions{NoInlineReads: off})
			t.Cleanup(release) // before the server's Close: a failed test must not leave a read held
			c, err := net.Dial("unix", sock)
			must(t, err)
			defer c.Close()
			r := handshakeRaw(t, c)
			write := r.write
			data := pattern(4096, 77)
			write(requestHeader(nil, 0, cmdRead, 1, 0, 4096))        // miss
			write(requestHeader(nil, 0, cmdRead, 2, 100*4096, 4096)) // hit
			write(append(requestHeader(nil, 0, cmdWrite, 3, 101*4096, 4096), data...))
			write(requestHeader(nil, 0, cmdRead, 4, 101*4096, 4096)) // hit, sees 3
			write(requestHeader(nil, 0, cmdRead, 5, 4096, 4096))     // miss
			want := map[uint64][]byte{2: e.bytes()[100*4096 : 101*4096], 3: nil, 4: data}
			if !off {
				// The reader answers what it runs in arrival order.
				for _, h := range []uint64{2, 3, 4} {
					checkReply(t, r, h, want[h])
				}
			} else {
				for range 3 {
					h := peekHandle(t, r)
					checkReply(t, r, h, want[h])
					delete(want, h)
				}
			}
			release()
			img := e.bytes()
			got := map[uint64]bool{}
			for range 2 {
				h := peekHandle(t, r)
				checkReply(t, r, h, img[(h/4)*4096:(h/4+1)*4096])
				got[h] = true
			}
			if !got[1] || !got[5] {
				t.Fatalf("misses answered: %v, want handles 1 and 5", got)
			}
			wantInline := map[bool]int64{false: 2, true: 0}[off]
			if e.inline.Load() != wantInline || e.worker.Load() != 4-wantInline {
				t.Errorf("reads served inline %d, by workers %d; want %d, %d",
					e.inline.Load(), e.worker.Load(), wantInline, 4-wantInline)
			}
		})
	}
}

// handshakeRaw negotiates the default export (no structured replies)
// on c.
func handshakeRaw(t *testing.T, c net.Conn) *rawConn {
	t.Helper()
	r := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	r.read(18)
	r.write(binary.BigEndian.AppendUint32(nil, clientFixedNew|clientNoZeroes))
	r.expectReply(optGo, goData(""), repAck)
	return r
}

// next reads n reply bytes within seconds, so a reader stuck on a miss
// fails the test quickly.
func next(t *testing.T, r *rawConn, n int) []byte {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		t.Fatalf("reply not answered: %v", err)
	}
	return p
}

// peekHandle is the handle of the next simple reply.
func peekHandle(t *testing.T, r *rawConn) uint64 {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := r.br.Peek(16)
	if err != nil {
		t.Fatalf("reply not answered: %v", err)
	}
	return binary.BigEndian.Uint64(h[8:])
}

// checkReply reads a simple reply to handle, with data when want is
// not nil, and compares.
func checkReply(t *testing.T, r *rawConn, handle uint64, want []byte) {
	t.Helper()
	h := next(t, r, 16)
	if binary.BigEndian.Uint32(h) != simpleMagic || binary.BigEndian.Uint64(h[8:]) != handle ||
		binary.BigEndian.Uint32(h[4:]) != 0 {
		t.Fatalf("reply %x, want success for handle %d", h, handle)
	}
	if want != nil && !bytes.Equal(next(t, r, len(want)), want) {
		t.Fatalf("read %d returned other data", handle)
	}
}

// TestInlineReadsConcurrent drives two connections with structured
// replies from several goroutines at once: each owns some 4 KiB blocks
// and writes them (data or zeroes, so replies carry hole chunks) and
// reads runs of them back, while the export misses at random (cold
// blocks, and ReadAtNoWait failing one time in five) and its device
// delays misses, so replies come back out of order and inline and worker
// reads interleave on each connection. Every read must return what its
// goroutine last wrote, with the fast path on and off.
func TestInlineReadsConcurrent(t *testing.T) {
	for _, off := range []bool{false, true} {
		name := map[bool]string{false: "inline", true: "off"}[off]
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			const blocks, owners = 256, 8
			var cold []int64
			for b := range int64(blocks) {
				if b%3 == 0 {
					cold = append(cold, b)
				}
			}
			e := newCacheExport(newMemExport(blocks*4096), cold...)
			e.flaky = true
			sock := serveExport(t, cacheExporter{e}, ServerOptions{NoInlineReads: off})
			clients := []*Client{dial(t, "nbd+unix:///?socket="+sock, nil), dial(t, "nbd+unix:///?socket="+sock, nil)}
			for _, c := range clients {
				if !c.structured {
					t.Fatal("structured replies not negotiated")
				}
			}
			var g errgroup.Group
			for o := range owners {
				g.Go(func() error { return ownBlocks(clients[o%2], o, owners, blocks) })
			}
			must(t, g.Wait())
			in, wk := e.inline.Load(), e.worker.Load()
			t.Logf("reads served inline %d, by workers %d", in, wk)
			if off && in != 0 || !off && (in == 0 || wk == 0) {
				t.Errorf("reads served inline %d, by workers %d", in, wk)
			}
		})
	}
}

// ownBlocks writes and reads back runs of the blocks [o*n, (o+1)*n).
func ownBlocks(c *Client, o, owners, blocks int) error {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(o), 1))
	n := blocks / owners
	model := make([]byte, n*4096)
	base := int64(o*n) * 4096
	for i := range 300 {
		k := rng.IntN(n)
		if rng.IntN(3) == 0 {
			p := make([]byte, 4096) // one time in four zeroes: a hole chunk
			if rng.IntN(4) != 0 {
				p = pattern(4096, byte(i+o))
			}
			if err := c.WriteAt(ctx, p, base+int64(k)*4096, false); err != nil {
				return err
			}
			copy(model[k*4096:], p)
			continue
		}
		m := 1 + rng.IntN(min(4, n-k))
		got := make([]byte, m*4096)
		if err := c.ReadAt(ctx, got, base+int64(k)*4096); err != nil {
			return err
		}
		if !bytes.Equal(got, model[k*4096:(k+m)*4096]) {
			return fmt.Errorf("owner %d: read of blocks %d+%d does not return the last writes", o, k, m)
		}
	}
	return nil
}

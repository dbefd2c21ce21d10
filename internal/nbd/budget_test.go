package nbd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// countingExport is a memExport whose reads take a moment and count the
// bytes being read at once, to observe the server's buffer budgets.
type countingExport struct {
	*memExport
	now, peak atomic.Int64
}

func (e *countingExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	n := e.now.Add(int64(len(p)))
	for {
		old := e.peak.Load()
		if n <= old || e.peak.CompareAndSwap(old, n) {
			break
		}
	}
	time.Sleep(time.Millisecond)
	defer e.now.Add(-int64(len(p)))
	return e.memExport.ReadAt(ctx, p, off)
}

type oneExporter struct{ e Export }

func (o oneExporter) Open(context.Context, string) (Export, error) { return o.e, nil }
func (o oneExporter) List(context.Context) ([]ExportInfo, error)   { return nil, nil }

// TestServerBufferBudgets: however many requests clients pipeline, the
// payload bytes in flight stay within the server-wide budget (here 4
// connections of 16 workers each would read 2 MiB at once without it),
// every read returns the right data, and a read larger than every
// budget still completes (alone).
func TestServerBufferBudgets(t *testing.T) {
	checkGoroutines(t)
	m := newMemExport(4 << 20)
	for i := range m.data {
		m.data[i] = byte(i / 4096)
	}
	exp := &countingExport{memExport: m}
	const connBudget, budget = 64 << 10, 128 << 10
	srv := NewServer(oneExporter{exp}, ServerOptions{ConnBufferBytes: connBudget, BufferBytes: budget})
	sock := filepath.Join(shortTempDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		served.Wait()
	}()
	var g errgroup.Group
	for range 4 {
		c := dial(t, "nbd+unix:///x?socket="+sock, nil)
		for k := range 32 { // 32 concurrent 32 KiB reads per connection
			g.Go(func() error {
				p := make([]byte, 32<<10)
				off := int64(k) * int64(len(p)) * 3
				if err := c.ReadAt(context.Background(), p, off); err != nil {
					return err
				}
				if !bytes.Equal(p, m.data[off:off+int64(len(p))]) {
					return errors.New("wrong data")
				}
				return nil
			})
		}
		g.Go(func() error { // larger than both budgets
			p := make([]byte, 1<<20)
			if err := c.ReadAt(context.Background(), p, 1<<20); err != nil {
				return err
			}
			if !bytes.Equal(p, m.data[1<<20:2<<20]) {
				return errors.New("wrong data in the large read")
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if p := exp.peak.Load(); p > 1<<20 || (p > budget && p != 1<<20) {
		t.Fatalf("%d bytes read at once, want at most the budget %d (or one large read alone)", p, budget)
	}
}

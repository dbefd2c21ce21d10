package main

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/nbd"
)

// SIGTERM while NBD writers are busy: serve drains, flushes and exits 0,
// and after a restart every write it acknowledged is there, flushed by
// the client or not.
func TestSIGTERMLosesNoAcknowledgedWrite(t *testing.T) {
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "64M")
	// Writes land in a delta whose map lives in memory until a flush or a
	// checkpoint: only a clean drain-and-close keeps unflushed ones.
	d.must(t, "snapshot", "create", "vm", "base")
	uri := "nbd+unix:///vm?socket=" + filepath.Join(d.dir, "nbd.sock")
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[int64]byte{} // 64 KiB block offset -> pattern
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := nbd.Dial(ctx, uri, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; i < 256; i++ { // each block written once: no in-flight overwrite

				off := int64((i*4+w)%1024) * 64 << 10
				b := byte(i%250 + 1)
				if err := c.WriteAt(ctx, bytes.Repeat([]byte{b}, 64<<10), off, false); err != nil {
					return // the server went away: this write was not acknowledged
				}
				mu.Lock()
				acked[off] = b
				mu.Unlock()
				if i == 20 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	sigterm(t, d) // asserts exit 0
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before SIGTERM")
	}
	d2 := startServeIn(t, d.dir)
	defer sigterm(t, d2)
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 64<<10)
	for off, b := range acked {
		if err := c.ReadAt(ctx, got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{b}, 64<<10)) {
			t.Fatalf("block at %d lost its acknowledged write %d (reads %d)", off, b, got[0])
		}
	}
	t.Logf("%d blocks checked after SIGTERM and restart", len(acked))
}

package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestChunkCache: parallel readers of one chunk share one load, the cache
// holds at most its bound, and a failed load is tried again.
func TestChunkCache(t *testing.T) {
	c := newChunkCache(4)
	var loads atomic.Int32
	gate := make(chan struct{})
	load := func() ([]byte, error) {
		loads.Add(1)
		<-gate
		return []byte{7}, nil
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if b, err := c.get(context.Background(), 1, load); err != nil || b[0] != 7 {
				t.Errorf("get: %v %v", b, err)
			}
		})
	}
	time.Sleep(20 * time.Millisecond) // let them all wait on the one load
	close(gate)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("16 parallel readers of one chunk: %d loads", n)
	}
	for s := range uint64(10) {
		c.get(context.Background(), s, func() ([]byte, error) { return []byte{byte(s)}, nil })
	}
	if c.lru.Len() != 4 || len(c.m) != 4 {
		t.Fatalf("cache of 4 holds %d (%d mapped)", c.lru.Len(), len(c.m))
	}
	// A waiter whose client went away stops waiting; the load goes on.
	slow := make(chan struct{})
	done := make(chan []byte)
	go func() {
		b, _ := c.get(context.Background(), 99, func() ([]byte, error) { <-slow; return []byte{99}, nil })
		done <- b
	}()
	for { // until the load has started
		c.mu.Lock()
		_, started := c.m[99]
		c.mu.Unlock()
		if started {
			break
		}
		time.Sleep(time.Millisecond)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.get(gone, 99, load); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter with a cancelled context: %v", err)
	}
	close(slow)
	if b := <-done; b[0] != 99 {
		t.Fatalf("the load after a waiter left: %v", b)
	}
	boom := errors.New("boom")
	if _, err := c.get(context.Background(), 42, func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed load: %v", err)
	}
	if b, err := c.get(context.Background(), 42, func() ([]byte, error) { return []byte{42}, nil }); err != nil || b[0] != 42 {
		t.Fatalf("after a failed load: %v %v", b, err)
	}
}

// TestReadAtContextCancelled: a cancelled read stops at once, although
// chunk loads themselves run without the reader's cancellation.
func TestReadAtContextCancelled(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(1, 2)), 4<<20, 64<<10, 0)
	m := backup(t, r, nil, img, nil)
	im, err := r.OpenImage(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := im.ReadAtContext(ctx, make([]byte, len(img)), 0); !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("read with a cancelled context: %d bytes, %v", n, err)
	}
	got := make([]byte, 100<<10)
	if _, err := im.ReadAtContext(context.Background(), got, 10); err != nil || !bytes.Equal(got, img[10:10+len(got)]) {
		t.Fatalf("read after: %v", err)
	}
}

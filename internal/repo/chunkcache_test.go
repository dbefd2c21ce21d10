package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
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
	c := newChunkCache(4, 0)
	var loads atomic.Int32
	gate := make(chan struct{})
	load := func([]byte) ([]byte, error) {
		loads.Add(1)
		<-gate
		return []byte{7}, nil
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if e, err := c.get(context.Background(), 1, load); err != nil || e.data[0] != 7 {
				t.Errorf("get: %v", err)
			} else {
				c.release(e)
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
		if e, err := c.get(context.Background(), s, func([]byte) ([]byte, error) { return []byte{byte(s)}, nil }); err == nil {
			c.release(e)
		}
	}
	if c.lru.Len() != 4 || len(c.m) != 4 {
		t.Fatalf("cache of 4 holds %d (%d mapped)", c.lru.Len(), len(c.m))
	}
	// A waiter whose client went away stops waiting; the load goes on.
	slow := make(chan struct{})
	done := make(chan byte)
	go func() {
		e, _ := c.get(context.Background(), 99, func([]byte) ([]byte, error) { <-slow; return []byte{99}, nil })
		done <- e.data[0]
		c.release(e)
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
	if b := <-done; b != 99 {
		t.Fatalf("the load after a waiter left: %v", b)
	}
	boom := errors.New("boom")
	if _, err := c.get(context.Background(), 42, func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed load: %v", err)
	}
	if e, err := c.get(context.Background(), 42, func([]byte) ([]byte, error) { return []byte{42}, nil }); err != nil || e.data[0] != 42 {
		t.Fatalf("after a failed load: %v", err)
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

// TestImageCacheReuseConcurrent: readers, read-ahead and whole-chunk
// caching race over a cache far smaller than the image, so chunk buffers
// are evicted and reused for other chunks all the time (some while a
// reader still copies from them, some while their chunk is still being
// loaded); every read must still return the image's bytes. Run with
// -race too: a buffer reused while held is a data race as well as a
// wrong answer.
func TestImageCacheReuseConcurrent(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	const size = 4<<20 + 5<<10 // a short last chunk
	img := repotest.Image(rand.New(rand.NewPCG(5, 6)), size, 64<<10, 0.2)
	m := backup(t, r, nil, img, nil)
	ctx := context.Background()
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	im.SetCacheChunks(3)
	cs := int64(im.ChunkSize())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 150 {
				off := rng.Int64N(size)
				n := 1 + rng.Int64N(min(size-off, 3*cs))
				p := bytes.Repeat([]byte{0xAA}, int(n))
				switch g % 4 {
				case 0: // read-ahead racing the readers' own loads
					if err := im.Prefetch(ctx, uint64(off/cs), 4); err != nil {
						t.Error(err)
						return
					}
				case 1: // whole chunks copied in, and read back from the cache
					off &^= cs - 1
					p = bytes.Clone(img[off : off+min(cs, size-off)])
					im.CacheChunks(uint64(off/cs), p)
					for i := range p {
						p[i] = 0xAA
					}
					if !im.ReadCached(p, off) {
						continue // evicted by another reader meanwhile
					}
					if !bytes.Equal(p, img[off:off+int64(len(p))]) {
						t.Errorf("cached read %d+%d differs from the image", off, len(p))
						return
					}
					continue
				}
				if _, err := im.ReadAtContext(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(p, img[off:off+n]) {
					t.Errorf("read %d+%d differs from the image", off, n)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := im.chunks.lru.Len(); n > 3 {
		t.Fatalf("cache of 3 holds %d", n)
	}
	if len(im.chunks.free) == 0 {
		t.Fatal("no evicted buffer was kept for reuse")
	}
}

// TestImageCacheZeroSlotsShared: zero slots are cached as one shared
// zero buffer, which is never handed out for another chunk's load.
func TestImageCacheZeroSlotsShared(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(7, 8)), 1<<20, 64<<10, 0.5)
	m := backup(t, r, nil, img, nil)
	ctx := context.Background()
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	im.SetCacheChunks(2)
	zs := -1
	for s := range len(img) / (64 << 10) {
		if allZeroBytes(img[s*64<<10 : (s+1)*64<<10]) {
			zs = s
			break
		}
	}
	if zs < 0 {
		t.Fatal("the image has no zero slot")
	}
	// No chunk buffer is allocated for it (the cache has no spare one yet).
	p := make([]byte, 10)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if _, err := im.ReadAtContext(ctx, p, int64(zs)*64<<10); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 16<<10 {
		t.Fatalf("reading a zero slot allocated %d bytes", n)
	}
	if e, ok := im.chunks.acquire(uint64(zs)); !ok || &e.data[0] != &r.zeros()[0] {
		t.Fatal("a zero slot is cached in a buffer of its own, not the shared zero chunk")
	} else {
		im.chunks.release(e)
	}
	for range 3 { // evictions recycle buffers; the zero one must not be
		for off := int64(0); off < int64(len(img)); off += 4 << 10 {
			p := bytes.Repeat([]byte{0xAA}, 4<<10)
			if _, err := im.ReadAtContext(ctx, p, off); err != nil || !bytes.Equal(p, img[off:off+4<<10]) {
				t.Fatalf("read %d: %v", off, err)
			}
		}
	}
	if !allZeroBytes(r.zeros()) {
		t.Fatal("the shared zero chunk was written")
	}
	for _, b := range im.chunks.free {
		if cap(b) > 0 && &b[:1][0] == &r.zeros()[0] {
			t.Fatal("the shared zero chunk is on the free list")
		}
	}
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

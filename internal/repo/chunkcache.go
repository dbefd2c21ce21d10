package repo

import (
	"container/list"
	"context"
	"sync"
)

// chunkCache keeps an Image's most recently used decoded chunks, and
// loads each missing one once however many readers want it at the same
// time (an NBD client's parallel small reads of one chunk).
//
// The buffers of evicted chunks are reused for the next loads: a cold
// random read that decoded into fresh memory paid ~10 page faults (13 µs
// each on a host with free page reporting), zeroing and garbage
// collection per 4 KiB served. So readers hold an entry (refs) while
// they copy from it, and a buffer is reused only once no one does.
type chunkCache struct {
	max    int
	bufCap int // capacity of a new chunk buffer (chunk + decoder slack)
	mu     sync.Mutex
	m      map[uint64]*list.Element // of *cached
	lru    list.List                // front: most recent
	free   [][]byte                 // buffers no entry or reader holds
}

type cached struct {
	slot  uint64
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
	refs  int  // holders (the loader, readers copying); under mu
	gone  bool // evicted: data is freed when refs drops to 0
}

// maxFreeBufs bounds the spare buffers kept (a full cache frees one per
// load, so a few suffice).
const maxFreeBufs = 16

func newChunkCache(max, bufCap int) *chunkCache {
	return &chunkCache{max: max, bufCap: bufCap, m: map[uint64]*list.Element{}}
}

// get returns slot's entry, held: read its data, then release it. A
// missing chunk is loaded by load into buf (a reused buffer, or nil) if
// no one is loading it already; a reader waiting for another's load
// gives up when its ctx ends.
func (c *chunkCache) get(ctx context.Context, slot uint64, load func(buf []byte) ([]byte, error)) (*cached, error) {
	c.mu.Lock()
	if el, ok := c.m[slot]; ok {
		c.lru.MoveToFront(el)
		ent := el.Value.(*cached)
		ent.refs++
		c.mu.Unlock()
		select {
		case <-ent.ready:
			if ent.err != nil {
				c.release(ent)
				return nil, ent.err
			}
			return ent, nil
		case <-ctx.Done():
			c.release(ent)
			return nil, ctx.Err()
		}
	}
	ent := &cached{slot: slot, ready: make(chan struct{}), refs: 1}
	c.m[slot] = c.lru.PushFront(ent)
	c.evict()
	buf := c.takeLocked()
	c.mu.Unlock()
	data, err := load(buf)
	c.mu.Lock()
	ent.data, ent.err = data, err
	close(ent.ready)
	if err != nil { // the next reader tries again
		if el, ok := c.m[slot]; ok && el.Value == ent {
			c.lru.Remove(el)
			delete(c.m, slot)
		}
		ent.refs--
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	return ent, nil
}

// release ends a hold from get or acquire.
func (c *chunkCache) release(ent *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ent.refs--
	c.recycleLocked(ent)
}

// recycleLocked keeps an evicted entry's buffer once no one holds it.
func (c *chunkCache) recycleLocked(ent *cached) {
	if !ent.gone || ent.refs > 0 || ent.err != nil || ent.data == nil {
		return
	}
	if len(c.free) < maxFreeBufs && cap(ent.data) >= c.bufCap {
		c.free = append(c.free, ent.data[:0])
	}
	ent.data = nil // a stale holder would read another chunk: fail loudly
}

// take returns a spare buffer (nil if there is none): the caller fills
// it and hands it back with put.
func (c *chunkCache) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeLocked()
}

func (c *chunkCache) takeLocked() []byte {
	n := len(c.free)
	if n == 0 {
		return nil
	}
	b := c.free[n-1]
	c.free = c.free[:n-1]
	return b
}

// resize bounds the cache to max chunks (at least 1), evicting the
// oldest now if it holds more.
func (c *chunkCache) resize(max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = 1
	if max > 1 {
		c.max = max
	}
	c.evict()
}

// evict drops the least recent chunks beyond max; c.mu is held.
func (c *chunkCache) evict() {
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		ent := old.Value.(*cached)
		delete(c.m, ent.slot)
		ent.gone = true
		c.recycleLocked(ent)
	}
}

// missing returns which of slots [first, first+n) the cache neither
// holds nor is loading.
func (c *chunkCache) missing(first uint64, n int) []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]bool, n)
	for i := range out {
		_, ok := c.m[first+uint64(i)]
		out[i] = !ok
	}
	return out
}

// put adds a loaded chunk unless the slot is cached or loading already
// (read-ahead: a reader's own load wins); the cache owns data after.
func (c *chunkCache) put(slot uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ent := &cached{slot: slot, ready: make(chan struct{}), data: data}
	close(ent.ready)
	if _, ok := c.m[slot]; ok {
		ent.gone = true
		c.recycleLocked(ent)
		return
	}
	c.m[slot] = c.lru.PushFront(ent)
	c.evict()
}

// acquire returns slot's entry, held, if it is cached and loaded,
// without waiting.
func (c *chunkCache) acquire(slot uint64) (*cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[slot]
	if !ok {
		return nil, false
	}
	ent := el.Value.(*cached)
	select {
	case <-ent.ready:
		if ent.err != nil {
			return nil, false
		}
		c.lru.MoveToFront(el)
		ent.refs++
		return ent, true
	default:
		return nil, false
	}
}

// has reports whether slot is cached and loaded.
func (c *chunkCache) has(slot uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[slot]
	if !ok {
		return false
	}
	select {
	case <-el.Value.(*cached).ready:
		return el.Value.(*cached).err == nil
	default:
		return false
	}
}

func (c *chunkCache) capacity() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

package repo

import (
	"container/list"
	"context"
	"sync"
)

// chunkCache keeps an Image's most recently used decoded chunks, and
// loads each missing one once however many readers want it at the same
// time (an NBD client's parallel small reads of one chunk).
type chunkCache struct {
	max int
	mu  sync.Mutex
	m   map[uint64]*list.Element // of *cached
	lru list.List                // front: most recent
}

type cached struct {
	slot  uint64
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, m: map[uint64]*list.Element{}}
}

// get returns slot's chunk, loading it if no one is; a reader waiting for
// another's load gives up when its ctx ends.
func (c *chunkCache) get(ctx context.Context, slot uint64, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.m[slot]; ok {
		c.lru.MoveToFront(el)
		ent := el.Value.(*cached)
		c.mu.Unlock()
		select {
		case <-ent.ready:
			return ent.data, ent.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ent := &cached{slot: slot, ready: make(chan struct{})}
	c.m[slot] = c.lru.PushFront(ent)
	c.evict()
	c.mu.Unlock()
	ent.data, ent.err = load()
	close(ent.ready)
	if ent.err != nil { // the next reader tries again
		c.mu.Lock()
		if el, ok := c.m[slot]; ok && el.Value == ent {
			c.lru.Remove(el)
			delete(c.m, slot)
		}
		c.mu.Unlock()
	}
	return ent.data, ent.err
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
		delete(c.m, old.Value.(*cached).slot)
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
// (read-ahead: a reader's own load wins).
func (c *chunkCache) put(slot uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[slot]; ok {
		return
	}
	ent := &cached{slot: slot, ready: make(chan struct{}), data: data}
	close(ent.ready)
	c.m[slot] = c.lru.PushFront(ent)
	c.evict()
}

// peek returns slot's chunk if it is cached and loaded, without waiting.
func (c *chunkCache) peek(slot uint64) ([]byte, bool) {
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
		return ent.data, true
	default:
		return nil, false
	}
}

func (c *chunkCache) capacity() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

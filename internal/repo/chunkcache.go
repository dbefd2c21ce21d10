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
	if c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*cached).slot)
	}
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

package scheduler

import (
	"sync"
	"time"

	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/repo"
)

// The file browser's points kept open between requests: opening one
// (a repository read lock written, the point's index and file system
// read) cost ~12 ms of the host's CPU per request, most of a listing's.
// An idle point holds its repository read lock and a trimmed chunk
// cache, so few are kept and not for long: at most pointsKept, each
// closed after Options.PointIdle unused, when a newer one pushes it out,
// before a prune of its repository (which needs the lock exclusive),
// when retention forgets it, and when its policy changes or goes.
const (
	pointsKept       = 4
	defaultPointIdle = time.Minute
	// keptCacheBytes is what an idle point keeps of its chunk cache: the
	// metadata a listing reads again, not the last download.
	keptCacheBytes = 4 << 20
)

// idlePoint is a point session no request is using.
type idlePoint struct {
	policy string
	id     repo.ID
	sess   *fileres.Session
	close  func() // closes sess (and its context)
	at     time.Time
}

// pointCache is the bounded set of idle points. A session is used by
// one request at a time: take removes it, put returns it.
type pointCache struct {
	max  int
	idle time.Duration
	now  func() time.Time

	mu     sync.Mutex
	points []*idlePoint // oldest first
	timer  *time.Timer  // closes expired points while any are kept
	closed bool
}

func newPointCache(max int, idle time.Duration, now func() time.Time) *pointCache {
	return &pointCache{max: max, idle: idle, now: now}
}

// take removes and returns an idle session of the policy's point, nil if
// none.
func (c *pointCache) take(policy string, id repo.ID) *idlePoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.points) - 1; i >= 0; i-- {
		if p := c.points[i]; p.policy == policy && p.id == id {
			c.points = append(c.points[:i], c.points[i+1:]...)
			return p
		}
	}
	return nil
}

// put keeps p for the next request, closing the oldest past the bound
// (p itself once the cache is shut).
func (c *pointCache) put(p *idlePoint) {
	p.at = c.now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		p.close()
		return
	}
	c.points = append(c.points, p)
	var out []*idlePoint
	if n := len(c.points) - c.max; n > 0 {
		out = append(out, c.points[:n]...)
		c.points = append([]*idlePoint(nil), c.points[n:]...)
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(c.idle, c.expire)
	}
	c.mu.Unlock()
	closeAll(out)
}

// expire closes the points idle for longer than the limit and waits for
// the next one to expire.
func (c *pointCache) expire() {
	c.mu.Lock()
	now := c.now()
	var out []*idlePoint
	for len(c.points) > 0 && now.Sub(c.points[0].at) >= c.idle {
		out = append(out, c.points[0])
		c.points = c.points[1:]
	}
	c.timer = nil
	if len(c.points) > 0 && !c.closed {
		c.timer = time.AfterFunc(c.points[0].at.Add(c.idle).Sub(now), c.expire)
	}
	c.mu.Unlock()
	closeAll(out)
}

// drop closes the policy's idle points (all of them with id zero), before
// a prune or after a forget.
func (c *pointCache) drop(policy string, id repo.ID) {
	c.mu.Lock()
	var out, keep []*idlePoint
	for _, p := range c.points {
		if p.policy == policy && (id.IsZero() || p.id == id) {
			out = append(out, p)
		} else {
			keep = append(keep, p)
		}
	}
	c.points = keep
	c.mu.Unlock()
	closeAll(out)
}

// shut closes every idle point; points put later are closed at once.
func (c *pointCache) shut() {
	c.mu.Lock()
	out := c.points
	c.points, c.closed = nil, true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	closeAll(out)
}

// kept is how many points are idle (for tests).
func (c *pointCache) kept() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.points)
}

func closeAll(ps []*idlePoint) {
	for _, p := range ps {
		p.close()
	}
}

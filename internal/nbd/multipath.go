package nbd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Path selection policies, named after VMware's NMP path selection plugins.
const (
	PolicyFixed      = "fixed"       // the preferred path while it lives, else the first live one
	PolicyMRU        = "mru"         // stay on the path that last worked
	PolicyRoundRobin = "round-robin" // switch to the next live path every SwitchEvery requests
)

// Path states.
const (
	PathActive  = "active"  // carries I/O under the policy
	PathStandby = "standby" // alive, used on failover
	PathDead    = "dead"    // failed; probed in the background
)

// ErrNoPath: every path of a multipath export is dead.
var ErrNoPath = errors.New("nbd: no live path")

// MultipathOptions configure DialMultipath.
type MultipathOptions struct {
	Policy      string // default PolicyFixed
	Preferred   int    // fixed: index of the preferred path
	SwitchEvery int    // round-robin: requests per path before switching (default 1000, as NMP)
	// ProbeInterval is how often dead paths are redialled (default 1 s).
	ProbeInterval time.Duration
	Client        *ClientOptions
}

// PathStats are one path's state and counters.
type PathStats struct {
	URI       string `json:"uri"`
	State     string `json:"state"`
	Requests  uint64 `json:"requests"`
	Bytes     uint64 `json:"bytes"`
	Errors    uint64 `json:"errors"`    // requests that failed on this path (then retried elsewhere)
	Failovers uint64 `json:"failovers"` // times the path died
	Restored  uint64 `json:"restored"`  // times a probe brought it back
	LastError string `json:"lastError,omitempty"`
}

// Multipath is one export opened on several paths (addresses of one
// host). A request whose path dies is retried on another live path:
// reads always, and writes too, since a write at a fixed offset is
// idempotent. Safe for concurrent use.
type Multipath struct {
	opts  MultipathOptions
	paths []*mpath
	size  int64
	flags uint16

	mu      sync.Mutex
	current int // path the policy uses now
	count   int // requests on current (round-robin)

	stop chan struct{}
	wg   sync.WaitGroup
}

type mpath struct {
	uri string
	mu  sync.Mutex
	c   *Client // nil while dead
	err error

	requests, bytes, errors, failovers, restored atomic.Uint64
}

func (p *mpath) client() *Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c
}

// DialMultipath opens the export on every URI (each naming the same
// export through another address). Paths that fail now start dead and
// are probed; at least one must connect, and all must agree on the size.
func DialMultipath(ctx context.Context, uris []string, o MultipathOptions) (*Multipath, error) {
	if len(uris) == 0 {
		return nil, fmt.Errorf("%w: no URIs", ErrNoPath)
	}
	o = o.withDefaults()
	m := &Multipath{opts: o, size: -1, stop: make(chan struct{}), current: min(max(o.Preferred, 0), len(uris)-1)}
	var errs []error
	for _, u := range uris {
		p := &mpath{uri: u}
		m.paths = append(m.paths, p)
		if err := m.connect(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	if m.size < 0 {
		return nil, fmt.Errorf("%w: %w", ErrNoPath, errors.Join(errs...))
	}
	m.wg.Add(1)
	go m.probeLoop()
	return m, nil
}

func (o MultipathOptions) withDefaults() MultipathOptions {
	switch o.Policy {
	case "":
		o.Policy = PolicyFixed
	case PolicyFixed, PolicyMRU, PolicyRoundRobin:
	default:
		o.Policy = PolicyFixed
	}
	if o.SwitchEvery <= 0 {
		o.SwitchEvery = 1000
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	return o
}

// ValidPolicy reports whether name is a path selection policy.
func ValidPolicy(name string) bool {
	return name == PolicyFixed || name == PolicyMRU || name == PolicyRoundRobin
}

// connect dials p; the first path to connect fixes size and flags, and a
// path answering with another size is no path to the same export.
func (m *Multipath) connect(ctx context.Context, p *mpath) error {
	c, err := Dial(ctx, p.uri, m.opts.Client)
	if err == nil {
		m.mu.Lock()
		if m.size < 0 {
			m.size, m.flags = c.Size(), c.Flags()
		} else if c.Size() != m.size {
			err = fmt.Errorf("nbd: path %s: export size %d, other paths %d", p.uri, c.Size(), m.size)
		}
		m.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil && p.c != nil {
		err = errors.New("nbd: path already connected") // a concurrent Probe won
	}
	if err != nil {
		if c != nil {
			go c.Close()
		}
		if p.c == nil {
			p.err = err
		}
		return err
	}
	p.c, p.err = c, nil
	return nil
}

// Size is the export's size in bytes.
func (m *Multipath) Size() int64 { return m.size }

// Flags are the transmission flags of the first path that connected.
func (m *Multipath) Flags() uint16 { return m.flags }

// pick returns the path for the next request under the policy, skipping
// tried paths and dead ones.
func (m *Multipath) pick(tried []bool) (int, *Client) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.Policy == PolicyFixed {
		m.current = min(max(m.opts.Preferred, 0), len(m.paths)-1)
	}
	if m.opts.Policy == PolicyRoundRobin {
		if m.count++; m.count > m.opts.SwitchEvery {
			m.current, m.count = (m.current+1)%len(m.paths), 1
		}
	}
	for k := range m.paths {
		i := (m.current + k) % len(m.paths)
		if tried[i] {
			continue
		}
		if c := m.paths[i].client(); c != nil {
			if m.opts.Policy != PolicyFixed {
				m.current = i // mru: this is now the path in use
			}
			return i, c
		}
	}
	return -1, nil
}

// do runs one request, failing over while paths die under it.
func (m *Multipath) do(ctx context.Context, n int, fn func(*Client) error) error {
	tried := make([]bool, len(m.paths))
	var errs []error
	for {
		i, c := m.pick(tried)
		if c == nil {
			return fmt.Errorf("%w: %w", ErrNoPath, errors.Join(errs...))
		}
		p := m.paths[i]
		p.requests.Add(1)
		err := fn(c)
		if err == nil {
			p.bytes.Add(uint64(n))
			return nil
		}
		if ctx.Err() != nil || !errors.Is(err, ErrClientClosed) {
			return err // the server's answer, or the caller gave up: not the path's fault
		}
		p.errors.Add(1)
		m.markDead(p, c, err)
		tried[i] = true
		errs = append(errs, fmt.Errorf("%s: %w", p.uri, err))
	}
}

// markDead retires c, unless a probe already replaced it.
func (m *Multipath) markDead(p *mpath, c *Client, err error) {
	p.mu.Lock()
	if p.c != c {
		p.mu.Unlock()
		return
	}
	p.c, p.err = nil, err
	p.mu.Unlock()
	p.failovers.Add(1)
	go c.Close() // Close waits for the reader; the request must not
}

// probeLoop redials dead paths until Close.
func (m *Multipath) probeLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.Probe()
		}
	}
}

// Probe redials every dead path now.
func (m *Multipath) Probe() {
	for _, p := range m.paths {
		if p.client() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.ProbeInterval+time.Second)
		if m.connect(ctx, p) == nil {
			p.restored.Add(1)
		}
		cancel()
	}
}

// Paths reports every path's state and counters.
func (m *Multipath) Paths() []PathStats {
	m.mu.Lock()
	cur, policy := m.current, m.opts.Policy
	m.mu.Unlock()
	out := make([]PathStats, len(m.paths))
	active := -1 // fixed and mru: the first live path from the current one
	for k := range m.paths {
		if i := (cur + k) % len(m.paths); m.paths[i].client() != nil {
			active = i
			break
		}
	}
	for i, p := range m.paths {
		p.mu.Lock()
		alive, lastErr := p.c != nil, p.err
		p.mu.Unlock()
		st := PathStandby
		switch {
		case !alive:
			st = PathDead
		case policy == PolicyRoundRobin || i == active:
			st = PathActive
		}
		out[i] = PathStats{URI: p.uri, State: st, Requests: p.requests.Load(), Bytes: p.bytes.Load(),
			Errors: p.errors.Load(), Failovers: p.failovers.Load(), Restored: p.restored.Load()}
		if lastErr != nil {
			out[i].LastError = lastErr.Error()
		}
	}
	return out
}

// Close stops probing and closes every path.
func (m *Multipath) Close() error {
	select {
	case <-m.stop:
		return nil
	default:
		close(m.stop)
	}
	m.wg.Wait()
	for _, p := range m.paths {
		p.mu.Lock()
		c := p.c
		p.c, p.err = nil, ErrClientClosed
		p.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
	return nil
}

package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// Directories of the datastore holding the group files.
const (
	SourceDir = "replication" // DATASTORE/replication/NAME.json
	TargetDir = "replicas"    // DATASTORE/replicas/GROUP.json
)

// Service is replication on one host: the source groups' runners and
// the target's replica routes. It is a daemon.Service.
type Service struct {
	h       *host.Host
	api     *api.Server
	log     *slog.Logger
	sources store
	target  *target
	encoder *zstd.Encoder

	wireBytes atomic.Int64 // request bodies sent, all groups

	mu      sync.Mutex
	groups  map[string]*group
	started bool
	ctx     context.Context
	wg      sync.WaitGroup
}

var _ daemon.Service = (*Service)(nil)

// Register makes the replication service of d: its routes are mounted
// on d's API now, its work starts with Serve.
func Register(d *daemon.Daemon, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	dir := d.Host().Datastore().Dir()
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	s := &Service{h: d.Host(), api: d.API(), log: log, sources: store{filepath.Join(dir, SourceDir)},
		target:  &target{h: d.Host(), store: store{filepath.Join(dir, TargetDir)}, tests: map[string]*testCopy{}, progress: map[string]*cycleProgress{}, mismatches: map[string]uint64{}},
		encoder: enc, groups: map[string]*group{}}
	s.routes()
	s.api.SetReplication(s)
	s.api.Registry().MustRegister(&collector{s: s})
	s.protect()
	d.Register(s)
	return s
}

// protect makes read-only, before the host serves anything, the disks of
// every replica that receives and of every source a planned migration
// demoted: no NBD client writes them in the instant before Start.
func (s *Service) protect() {
	names, _ := s.target.store.names()
	for _, n := range names {
		if st, err := s.target.get(n); err == nil && st.State == targetReceiving {
			for _, rd := range st.Disks {
				s.h.Protect(rd.Name, "replica of "+n)
			}
		}
	}
	names, _ = s.sources.names()
	for _, n := range names {
		var st sourceState
		if s.sources.load(n, &st) == nil && st.Halt == wire.ReplicationDemoted {
			for _, d := range st.Config.Disks {
				s.h.Protect(d.Source, "demoted by the planned migration of "+n)
			}
		}
	}
}

// Start rolls back half-applied cycles on the replicas (R4), then starts
// a runner per source group.
func (s *Service) Start(ctx context.Context, d *daemon.Daemon) error {
	if err := s.target.recoverAll(ctx); err != nil {
		s.log.Error("replica recovery", "err", err)
	}
	s.target.ready.Store(true)
	names, err := s.sources.names()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.started = ctx, true
	for _, n := range names {
		g := &group{svc: s}
		if err := s.sources.load(n, &g.st); err != nil {
			s.log.Error("replication group unreadable", "group", n, "err", err)
			continue
		}
		if g.peer, err = peerClient(g.st.Config); err != nil {
			s.log.Error("replication group", "group", n, "err", err)
			continue
		}
		s.startGroup(g)
	}
	return nil
}

// Stop ends every runner (a cycle in flight stops where it is: the next
// start resumes it).
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	for _, g := range s.groups {
		g.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startGroup runs g's scheduler; s.mu held.
func (s *Service) startGroup(g *group) {
	ctx, cancel := context.WithCancel(s.ctx)
	g.stop, g.wake, g.done = cancel, make(chan struct{}, 1), make(chan struct{})
	s.groups[g.st.Config.Name] = g
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(g.done)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); g.watch(ctx) }()
		g.run(ctx)
		wg.Wait()
	}()
}

// run is the scheduler: a cycle when due (RPO minus the estimated
// transfer time after the last point), retries with backoff on errors.
func (g *group) run(ctx context.Context) {
	backoff := time.Second
	for {
		wait := g.due()
		g.mu.Lock()
		g.next = time.Now().Add(wait)
		g.mu.Unlock()
		// Re-planned every second: the changes pile up meanwhile.
		t := time.NewTimer(min(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-g.wake:
		case <-t.C:
		}
		t.Stop()
		if g.idle() || g.due() > 0 {
			continue
		}
		err := g.cycle(ctx)
		g.checkRPO()
		if err == nil {
			backoff = time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		g.mu.Lock()
		g.lastErr = err
		g.mu.Unlock()
		g.svc.log.Warn("replication cycle failed", "group", g.st.Config.Name, "err", err)
		if sleep(ctx, backoff) != nil {
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// idle: paused or halted groups run no cycle (their timers still tick,
// to report RPO violations).
func (g *group) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.st.Paused || g.st.Halt != ""
}

// due is how long until the next cycle: the last point's instant plus
// the RPO, less the transfer time expected (estimate).
func (g *group) due() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.st.Inflight != nil || g.st.Acked == nil {
		return 0
	}
	if g.st.Paused || g.st.Halt != "" {
		return time.Second
	}
	at := g.st.Acked.Time.Add(g.st.Config.RPO - max(g.estimate(), g.transferTime()))
	return max(0, time.Until(at))
}

// estimate is the least transfer time to plan for: 1.5 times the
// longest of the last three incremental cycles (a full sync says
// nothing of them).
func (g *group) estimate() time.Duration {
	var longest float64
	k := 0
	for i := len(g.st.Cycles) - 1; i >= 0 && k < 3; i-- {
		if !g.st.Cycles[i].Full {
			longest = max(longest, g.st.Cycles[i].Seconds)
			k++
		}
	}
	return time.Duration(1.5 * longest * float64(time.Second))
}

// transferTime is 1.5 times what sending the changes made so far would
// take at the recent cycles' rate (50 MB/s before any): the changes grow
// while the next cycle waits, so due is asked again every second.
func (g *group) transferTime() time.Duration {
	var dirty int64
	for _, n := range g.sourceNames() {
		d, err := g.svc.h.Disk(n)
		if err != nil {
			continue
		}
		if st, err := d.Stat(); err == nil && st.CBT != nil {
			dirty += int64(st.CBT.DirtyBlocks) * st.CBT.Granularity
		}
	}
	rate, k := 0.0, 0
	for i := len(g.st.Cycles) - 1; i >= 0 && k < 3; i-- {
		if c := g.st.Cycles[i]; c.Bytes >= 1<<20 && c.Rate > 0 {
			rate += c.Rate
			k++
		}
	}
	if k == 0 {
		rate, k = 50e6, 1
	}
	return time.Duration(1.5 * float64(dirty) / (rate / float64(k)) * float64(time.Second))
}

// watch checks the RPO every second while the group exists, so a
// violation during a long cycle is counted and reported too.
func (g *group) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.checkRPO()
		}
	}
}

// checkRPO records a transition into violation (event and counter).
func (g *group) checkRPO() {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.violated()
	if v && !g.wasViolated {
		g.st.Violations++
		g.event("RPO %s violated: the last point is %s old", g.st.Config.RPO, g.age().Round(time.Second))
		g.save()
	}
	g.wasViolated = v
}

func (g *group) age() time.Duration {
	if g.st.Acked == nil {
		return 0
	}
	return time.Since(g.st.Acked.Time)
}

func (g *group) violated() bool {
	return g.st.Acked != nil && g.age() > g.st.Config.RPO
}

// view is the group's status; g.mu held.
func (g *group) view() wire.Replication {
	v := g.st.Config.view()
	v.Paused, v.LastPoint, v.Events = g.st.Paused, g.st.Acked, g.st.Events
	v.State = wire.ReplicationOK
	switch {
	case g.st.Halt != "":
		v.State = g.st.Halt
	case g.violated(): // before paused: a paused group's protection lapses too
		v.State = wire.ReplicationRPOViolated
	case g.st.Paused:
		v.State = wire.ReplicationPaused
	case g.syncing || g.st.Acked == nil:
		v.State = wire.ReplicationSyncing
	case g.lastErr != nil:
		v.State = wire.ReplicationError
	}
	if g.lastErr != nil {
		v.Error = g.lastErr.Error()
	}
	if g.st.Acked != nil {
		v.LastPointAge = g.age().Seconds()
	}
	if !g.next.IsZero() {
		n := g.next.UTC()
		v.NextCycle = &n
	}
	if k := len(g.st.Cycles); k > 0 {
		c := g.st.Cycles[k-1]
		v.LastCycle = &c
		v.Cycles = append([]wire.CycleStats(nil), g.st.Cycles...)
	}
	return v
}

// create defines a group: validated, declared on the target (which
// checks token, CA and disk sizes), then saved and started. A refusal
// anywhere changes nothing on this host (R8).
func (s *Service) create(ctx context.Context, req wire.CreateReplicationRequest) (*group, error) {
	c, err := configFrom(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, exists := s.groups[c.Name]
	s.mu.Unlock()
	if exists {
		return nil, fmt.Errorf("replication %s: %w", c.Name, disk.ErrExists)
	}
	put := wire.PutReplicaRequest{Seed: c.Seed, Keep: c.Keep}
	if c.KeepWithin > 0 {
		put.KeepWithin = c.KeepWithin.String()
	}
	for _, rd := range c.Disks {
		d, err := s.h.Disk(rd.Source)
		if err != nil {
			return nil, err
		}
		put.Disks = append(put.Disks, wire.ReplicaDisk{Name: rd.Target, Size: d.Size(), Source: rd.Source})
	}
	peer, err := peerClient(c)
	if err != nil {
		return nil, err
	}
	rep, err := peer.PutReplica(ctx, c.Name, put)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", c.Target, err)
	}
	g := &group{svc: s, peer: peer, st: sourceState{Config: c, BaseSeq: lastSeq(rep)}}
	g.event("created: %d disks to %s, rpo %s", len(c.Disks), c.Target, c.RPO)
	if err := g.save(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil, fmt.Errorf("%w: replication is not running yet", host.ErrClosed)
	}
	s.startGroup(g)
	return g, nil
}

func (s *Service) group(name string) (*group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[name]
	if g == nil {
		return nil, fmt.Errorf("replication %s: %w", name, ErrNotFound)
	}
	return g, nil
}

// remove stops a group and deletes its file and its source snapshots;
// the target keeps the replica (its points stay recoverable).
func (s *Service) remove(ctx context.Context, name string) error {
	g, err := s.group(name)
	if err != nil {
		return err
	}
	g.stop()
	<-g.done
	g.cycleMu.Lock()
	defer g.cycleMu.Unlock()
	s.mu.Lock()
	delete(s.groups, name)
	s.mu.Unlock()
	var errs []error
	for _, n := range g.sourceNames() {
		s.h.Unprotect(n)
		d, err := s.h.Disk(n)
		if err != nil {
			continue
		}
		for _, sn := range d.Snapshots() {
			if len(sn.ID) > len("rep-"+name+"-") && sn.ID[:len("rep-"+name+"-")] == "rep-"+name+"-" {
				errs = append(errs, deleteSnap(ctx, d, sn.ID))
			}
		}
	}
	return errors.Join(append(errs, s.sources.remove(name))...)
}

package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/labels"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

// DefaultMaxConcurrent bounds the host's backups across policies.
const DefaultMaxConcurrent = 2

// Options configure a Scheduler.
type Options struct {
	Datastore string      // where policies.json and the credentials live
	Jobs      *jobs.Store // the history jobs are recorded in (required)
	// Disks lists the datastore's disks (sources are matched against it).
	Disks func() ([]string, error)
	// Labels gives every disk's labels, for sources by label selector
	// (default the host's, from Start).
	Labels func() (map[string]map[string]string, error)
	Logger *slog.Logger
	// MaxConcurrent bounds backups across all policies (default 2).
	MaxConcurrent int
	// Tick is how often schedules are looked at (default 1s).
	Tick time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OpenSource opens a policy's hypervisor source (default
	// sources.Open); tests pass a fake VM.
	OpenSource func(ctx context.Context, uri string, o sources.Options) (sources.VM, error)
	// Scratch is where QEMU puts the fleecing overlays and NBD socket
	// of hypervisor sources (default the system's temp dir).
	Scratch string
	// PointIdle is how long the file browser keeps a point open unused
	// (default 1 min; pointcache.go).
	PointIdle time.Duration
}

// Scheduler runs policies. It implements daemon.Service and api.Policies.
type Scheduler struct {
	o   Options
	f   files
	log *slog.Logger

	mu      sync.Mutex
	recs    map[string]*record
	secs    map[string]secret
	repos   map[string]*repoHandle
	retired []*repoHandle
	busy    map[string]bool // "backup/POLICY/DISK", "prune/POLICY", "check/POLICY"
	sources map[string]map[string]*srcState
	polSem  map[string]chan struct{}
	hostSem chan struct{}
	// sizes: each repository's size as last measured; measuring and
	// dirty keep one measurement per policy running, redone once if a
	// run ended meanwhile.
	sizes     map[string]*wire.RepoSize
	measuring map[string]bool
	dirty     map[string]bool

	env    transport.Env // the local API, set by Start
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}
	bytes  *prometheus.CounterVec // blockwise_backup_bytes_total
	// opens counts repository opens (key derivations), for tests.
	opens atomic.Int32
	// points are the file browser's idle points; pointOpens counts the
	// points it opened, for tests.
	points     *pointCache
	pointOpens atomic.Int32
}

var (
	_ daemon.Service = (*Scheduler)(nil)
	_ api.Policies   = (*Scheduler)(nil)
)

// srcState is what the history says of one source of one policy.
type srcState struct {
	lastSuccess   time.Time
	lastJob       string
	lastState     string
	failuresSince int
}

// New loads the policies of o.Datastore. It runs nothing before Start.
func New(o Options) (*Scheduler, error) {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OpenSource == nil {
		o.OpenSource = sources.Open
	}
	if o.PointIdle <= 0 {
		o.PointIdle = defaultPointIdle
	}
	s := &Scheduler{points: newPointCache(pointsKept, o.PointIdle, time.Now), o: o, f: newFiles(o.Datastore), log: o.Logger, repos: map[string]*repoHandle{},
		busy: map[string]bool{}, sizes: map[string]*wire.RepoSize{}, measuring: map[string]bool{}, dirty: map[string]bool{}, sources: map[string]map[string]*srcState{}, polSem: map[string]chan struct{}{},
		hostSem: make(chan struct{}, o.MaxConcurrent), wake: make(chan struct{}, 1), bytes: newBytesCounter()}
	var err error
	if s.recs, s.secs, err = s.f.load(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	for name, rec := range s.recs {
		if err := validate(rec.Policy); err != nil {
			return nil, fmt.Errorf("scheduler: policy %s in %s: %w", name, s.f.policies, err)
		}
		s.polSem[name] = make(chan struct{}, max(rec.Policy.MaxConcurrent, 1))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, s.loadHistory()
}

// loadHistory rebuilds the sources' states from the job history.
func (s *Scheduler) loadHistory() error {
	return s.o.Jobs.Each(jobs.Filter{Kind: wire.JobBackup}, func(j wire.Job) error {
		s.recordEnd(j)
		return nil
	})
}

// recordEnd updates a source's state with an ended job.
func (s *Scheduler) recordEnd(j wire.Job) {
	if j.Policy == "" || j.Source == "" || !j.Done() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.sources[j.Policy]
	if m == nil {
		m = map[string]*srcState{}
		s.sources[j.Policy] = m
	}
	st := m[j.Source]
	if st == nil {
		st = &srcState{}
		m[j.Source] = st
	}
	st.lastJob, st.lastState = j.ID, j.State
	switch j.State {
	case wire.JobSucceeded:
		st.lastSuccess, st.failuresSince = *j.Ended, 0
	case wire.JobFailed, wire.JobInterrupted:
		st.failuresSince++
	}
}

// Start implements daemon.Service: it reaches the host through the API's
// unix socket, derives the policies' keys and starts the schedule loop.
func (s *Scheduler) Start(_ context.Context, d *daemon.Daemon) error {
	env, err := transport.LocalEnv(d.APIAddrs(), d.Datastore())
	if err != nil {
		return fmt.Errorf("scheduler: policies: %w", err)
	}
	s.env = env
	s.mu.Lock()
	if s.o.Disks == nil {
		s.o.Disks = d.Host().Datastore().List
	}
	if s.o.Labels == nil {
		s.o.Labels = hostLabels(d.Host())
	}
	for name := range s.recs {
		s.openRepoLocked(name)
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go s.loop()
	return nil
}

// Stop implements daemon.Service: running jobs are canceled (they end
// interrupted) and the repositories closed.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.points.shut()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("scheduler: jobs did not stop: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, h := range append(slices.Collect(mapValues(s.repos)), s.retired...) {
		errs = append(errs, h.closeRepo())
	}
	return errors.Join(errs...)
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// loop fires due schedules every Tick until Stop.
func (s *Scheduler) loop() {
	defer s.wg.Done()
	t := time.NewTicker(s.o.Tick)
	defer t.Stop()
	for {
		s.fireDue()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

// fireDue starts every schedule with a time in (last, now]: once, however
// many passed (a missed run runs once at start; docs/jobs.md invariant 7).
func (s *Scheduler) fireDue() {
	now := s.o.Now()
	s.mu.Lock()
	var todo []func()
	for name, rec := range s.recs {
		p := rec.Policy
		if p.Paused {
			continue
		}
		if sch, err := parseSchedule(p.Schedule, p.TimeZone); err == nil && due(sch, lastOr(rec.LastRun, p.Created), now) {
			rec.LastRun = now
			todo = append(todo, func() { s.startBackups(name, "schedule") })
		}
		if sch, err := parseSchedule(p.PruneSchedule, p.TimeZone); p.PruneSchedule != "" && err == nil && due(sch, lastOr(rec.LastPrune, p.Created), now) {
			rec.LastPrune = now
			todo = append(todo, func() { s.startMaintenance(name, wire.JobPrune) })
		}
		if sch, err := parseSchedule(p.CheckSchedule, p.TimeZone); p.CheckSchedule != "" && err == nil && due(sch, lastOr(rec.LastCheck, p.Created), now) {
			rec.LastCheck = now
			todo = append(todo, func() { s.startMaintenance(name, wire.JobCheck) })
		}
	}
	if len(todo) > 0 {
		if err := s.f.save(s.recs, s.secs); err != nil {
			s.log.Error("scheduler: saving the policies' last runs", "err", err)
		}
	}
	s.mu.Unlock()
	for _, f := range todo {
		f()
	}
}

func lastOr(t, created time.Time) time.Time {
	if t.IsZero() {
		return created
	}
	return t
}

// inventory is the datastore's disks and their labels, as sources are
// matched against them.
type inventory struct {
	names  []string
	labels map[string]map[string]string
}

// disks lists the datastore's disks and labels (none before Start
// without Options.Disks).
func (s *Scheduler) disks() (inventory, error) {
	s.mu.Lock()
	list, lab := s.o.Disks, s.o.Labels
	s.mu.Unlock()
	var inv inventory
	if list == nil {
		return inv, nil
	}
	var err error
	if inv.names, err = list(); err != nil || lab == nil {
		return inv, err
	}
	inv.labels, err = lab()
	return inv, err
}

// hostLabels reads the host's disk labels.
func hostLabels(h interface{ Labels() (*labels.Store, error) }) func() (map[string]map[string]string, error) {
	return func() (map[string]map[string]string, error) {
		st, err := h.Labels()
		if err != nil {
			return nil, err
		}
		return st.All(), nil
	}
}

// Selects reports whether the policy's sources select disk d with
// labels l: by name, by glob or by label selector. The console's
// protected and unprotected views use it through the policies'
// status, so both agree with what runs (docs/labels.md invariant 4).
func Selects(src wire.PolicySources, d string, l map[string]string) bool {
	if slices.Contains(src.Disks, d) {
		return true
	}
	for _, g := range src.Globs {
		if m, _ := path.Match(g, d); m {
			return true
		}
	}
	for _, q := range src.Labels {
		if sel, err := labels.ParseSelector(q); err == nil && sel.Matches(l) {
			return true
		}
	}
	return false
}

// matchSources lists the disks a policy selects, sorted, then its
// hypervisor sources (URIs) in their order.
func matchSources(p wire.Policy, inv inventory) []string {
	var out []string
	for _, d := range inv.names {
		if Selects(p.Sources, d, inv.labels[d]) {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	for _, u := range p.Sources.URIs {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// startBackups starts a backup of each source of the policy not already
// queued or running, and returns the jobs' IDs.
func (s *Scheduler) startBackups(name, why string) []string {
	disks, err := s.disks()
	if err != nil {
		s.log.Error("scheduler: listing disks", "policy", name, "err", err)
		return nil
	}
	s.mu.Lock()
	rec := s.recs[name]
	if rec == nil || s.ctx.Err() != nil {
		s.mu.Unlock()
		return nil
	}
	p := rec.Policy
	var ids []string
	for _, d := range matchSources(p, disks) {
		key := "backup/" + name + "/" + d
		if s.busy[key] {
			continue
		}
		run, err := s.begin(jobs.Spec{Kind: wire.JobBackup, Policy: name, Source: d, Queued: true})
		if err != nil {
			s.log.Error("scheduler: recording a job", "err", err)
			continue
		}
		s.busy[key] = true
		ids = append(ids, run.ID())
		run.Logf("info", "backup of %s queued by %s (policy %s)", d, why, name)
		s.wg.Add(1)
		go s.backupWithRetries(run, p, d, key)
	}
	s.mu.Unlock()
	return ids
}

// begin records a job whose cancel reaches the context s.jobCtx returns
// for it.
func (s *Scheduler) begin(sp jobs.Spec) (*jobRun, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	sp.Cancel = cancel
	r, err := s.o.Jobs.Begin(sp)
	if err != nil {
		cancel()
		return nil, err
	}
	return &jobRun{Run: r, ctx: ctx, cancel: cancel}, nil
}

// jobRun is a job with the context its work runs under.
type jobRun struct {
	*jobs.Run
	ctx    context.Context
	cancel context.CancelFunc
}

// end finishes the job: interrupted when the host is stopping.
func (s *Scheduler) end(r *jobRun, summary any, err error) wire.Job {
	defer r.cancel()
	if err != nil && s.ctx.Err() != nil {
		r.Interrupt(fmt.Errorf("the host stopped: %w", err))
	} else {
		r.Finish(summary, err)
	}
	j := r.View()
	s.recordEnd(j)
	return j
}

// acquire takes a slot of the policy and of the host, or fails with ctx.
func (s *Scheduler) acquire(ctx context.Context, name string) (release func(), err error) {
	s.mu.Lock()
	pol := s.polSem[name]
	s.mu.Unlock()
	if pol == nil {
		return nil, fmt.Errorf("%w: %s was removed", api.ErrPolicyNotFound, name)
	}
	select {
	case pol <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case s.hostSem <- struct{}{}:
	case <-ctx.Done():
		<-pol
		return nil, ctx.Err()
	}
	return func() { <-s.hostSem; <-pol }, nil
}

// backupWithRetries runs the first attempt (already recorded as run) and
// retries a failure up to the policy's Retries times, backing off.
func (s *Scheduler) backupWithRetries(run *jobRun, p wire.Policy, disk, key string) {
	defer s.wg.Done()
	// The source is free again before its last job ends: a client that
	// sees the end and runs the policy at once starts a new backup.
	unbusy := sync.OnceFunc(func() { s.mu.Lock(); delete(s.busy, key); s.mu.Unlock() })
	defer unbusy()
	backoff := parseDur(p.RetryBackoff, 30*time.Second)
	for attempt := 1; ; attempt++ {
		j := s.backupOnce(run, p, disk, func(err error) {
			if err == nil || attempt > p.Retries || run.ctx.Err() != nil {
				unbusy()
			}
		})
		if j.State != wire.JobFailed || attempt > p.Retries || s.ctx.Err() != nil {
			return
		}
		wait := backoff << (attempt - 1)
		s.log.Info("scheduler: retrying", "policy", p.Name, "disk", disk, "in", wait, "after", j.ID)
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
			return
		}
		var err error
		if run, err = s.begin(jobs.Spec{Kind: wire.JobBackup, Policy: p.Name, Source: disk, Attempt: attempt + 1, Queued: true}); err != nil {
			return
		}
		run.Logf("info", "attempt %d: retry of %s, which failed: %s", attempt+1, j.ID, j.Error)
	}
}

func parseDur(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

// backupOnce runs one recorded backup job to its end.
func (s *Scheduler) backupOnce(run *jobRun, p wire.Policy, disk string, beforeEnd func(error)) wire.Job {
	release, err := s.acquire(run.ctx, p.Name)
	if err != nil {
		beforeEnd(err)
		return s.end(run, nil, err)
	}
	run.Start()
	jobSum, sum, err := s.backup(run, p, disk)
	if err == nil {
		s.remeasure(p.Name)
		s.bytes.WithLabelValues(p.Name, "changed").Add(float64(sum.Changed))
		s.bytes.WithLabelValues(p.Name, "read").Add(float64(sum.Read))
		s.bytes.WithLabelValues(p.Name, "new").Add(float64(sum.NewBytes))
		s.bytes.WithLabelValues(p.Name, "stored").Add(float64(sum.Stored))
	}
	release() // the slots first: a job seen ended has let go of them
	beforeEnd(err)
	return s.end(run, jobSum, err)
}

// remeasure measures the policy's repository in the background.
func (s *Scheduler) remeasure(name string) {
	s.mu.Lock()
	if s.measuring[name] {
		s.dirty[name] = true
		s.mu.Unlock()
		return
	}
	s.measuring[name] = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			s.measure(name)
			s.mu.Lock()
			if !s.dirty[name] || s.ctx.Err() != nil {
				delete(s.measuring, name)
				s.mu.Unlock()
				return
			}
			s.dirty[name] = false
			s.mu.Unlock()
		}
	}()
}

func (s *Scheduler) measure(name string) {
	r, err := s.repoFor(s.ctx, name)
	if err != nil {
		return
	}
	st, err := r.Stats(s.ctx)
	if err != nil {
		s.log.Warn("scheduler: measuring the repository", "policy", name, "err", err)
		return
	}
	s.mu.Lock()
	s.sizes[name] = &wire.RepoSize{Points: st.Points, Logical: st.LogicalBytes, Unique: st.UniqueBytes, Stored: st.StoredBytes, At: s.o.Now().UTC()}
	s.mu.Unlock()
}

// startMaintenance starts a prune or check job of the policy's repository.
func (s *Scheduler) startMaintenance(name, kind string) []string {
	key := kind + "/" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[key] || s.recs[name] == nil || s.ctx.Err() != nil {
		return nil
	}
	run, err := s.begin(jobs.Spec{Kind: kind, Policy: name})
	if err != nil {
		s.log.Error("scheduler: recording a job", "err", err)
		return nil
	}
	s.busy[key] = true
	round := 0
	if kind == wire.JobCheck {
		round = s.recs[name].CheckRound
		s.recs[name].CheckRound++
	}
	p := s.recs[name].Policy
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var sum any
		var err error
		if kind == wire.JobPrune {
			sum, err = s.prune(run, p)
		} else {
			sum, err = s.check(run, p, round)
		}
		s.mu.Lock()
		delete(s.busy, key) // before the end shows: a new run may start at once
		s.mu.Unlock()
		s.end(run, sum, err)
	}()
	return []string{run.ID()}
}

// ensure backup's Host is what the scheduler hands it.
var _ backup.Host = backup.ClientHost{}

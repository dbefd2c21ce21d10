package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// Dir is where recoveries live under the datastore: NAME/ (the overlay
// and recover.json) and NAME.sock (the NBD socket) per target disk.
const Dir = "recoveries"

// Options of the service.
type Options struct {
	Datastore string
	Jobs      *jobs.Store
	Log       *slog.Logger
	// OpenRepo opens the repository whose points are recovered when a
	// request names no policy (serve --points-repo); the job closes it.
	// nil: such requests are refused (not found).
	OpenRepo func(ctx context.Context) (*repo.Repository, error)
	// PolicyRepo is the repository of a protection policy, opened with
	// the credentials the host keeps for it (the scheduler's, which
	// stays its owner: the job does not close it). nil: requests naming
	// a policy are refused.
	PolicyRepo func(ctx context.Context, policy string) (*repo.Repository, error)
	// Checkpoint is how often the copied chunks are recorded for a
	// resume (0: backup's default, 2 s).
	Checkpoint time.Duration
}

// Service runs recoveries as jobs of the host.
type Service struct {
	o   Options
	env transport.Env

	ctx  context.Context // ends at Stop: every job is interrupted
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]string // target disk → job ID
}

// Register creates the service and hangs it on the daemon and its API.
func Register(d *daemon.Daemon, o Options) *Service {
	if o.Log == nil {
		o.Log = d.Logger()
	}
	s := &Service{o: o, running: map[string]string{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	d.Register(s)
	d.API().SetRecoveries(s)
	return s
}

// Start implements daemon.Service: the disks are created and written
// through the host's own API socket, as the scheduler's restores are.
func (s *Service) Start(_ context.Context, d *daemon.Daemon) error {
	env, err := transport.LocalEnv(d.APIAddrs(), d.Datastore())
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	s.mu.Lock()
	s.env = env
	s.mu.Unlock()
	return nil
}

// Stop implements daemon.Service: running recoveries stop (their jobs
// end interrupted, their overlays kept for a resume).
func (s *Service) Stop(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var diskName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (s *Service) dir(name string) string { return filepath.Join(s.o.Datastore, Dir, name) }

// Recover implements api.Recoveries: it checks the request, begins the job
// and runs it in the background.
func (s *Service) Recover(ctx context.Context, req wire.RecoveryRequest) (wire.Recovery, error) {
	if !diskName.MatchString(req.ToDisk) {
		return wire.Recovery{}, fmt.Errorf("%w: toDisk %q", api.ErrRecoveryInvalid, req.ToDisk)
	}
	if req.Workers < 0 || req.RateMiB < 0 || req.CacheMiB < 0 {
		return wire.Recovery{}, fmt.Errorf("%w: negative workers, rate or cache", api.ErrRecoveryInvalid)
	}
	s.mu.Lock()
	ready, busy := s.env.Client != nil, s.running[req.ToDisk]
	s.mu.Unlock()
	switch {
	case !ready:
		return wire.Recovery{}, fmt.Errorf("%w: the host is starting", api.ErrRecoveryInvalid)
	case busy != "":
		return wire.Recovery{}, fmt.Errorf("%w: %s is being recovered by %s", api.ErrRecoveryExists, req.ToDisk, busy)
	}
	st, err := backup.LoadRecoverState(s.dir(req.ToDisk))
	switch {
	case err == nil && !req.Resume:
		return wire.Recovery{}, fmt.Errorf("%w: %s has a stopped recovery (%s): ask with resume", api.ErrRecoveryExists, req.ToDisk, st.Phase)
	case errors.Is(err, backup.ErrNoRecovery) && req.Resume:
		return wire.Recovery{}, fmt.Errorf("%w: %s", api.ErrRecoveryNotFound, req.ToDisk)
	case err != nil && !errors.Is(err, backup.ErrNoRecovery):
		return wire.Recovery{}, err
	}
	if st != nil {
		if req.Point != "" && !strings.HasPrefix(st.Point, req.Point) {
			return wire.Recovery{}, fmt.Errorf("%w: %s recovers point %s, not %s", api.ErrRecoveryInvalid, req.ToDisk, st.Point, req.Point)
		}
		if req.Policy != "" && req.Policy != st.Policy {
			return wire.Recovery{}, fmt.Errorf("%w: %s recovers from policy %q's repository, not %q's", api.ErrRecoveryInvalid, req.ToDisk, st.Policy, req.Policy)
		}
		req.Point, req.Disk, req.Policy = st.Point, "", st.Policy
	} else if req.Point == "" {
		return wire.Recovery{}, fmt.Errorf("%w: no point", api.ErrRecoveryInvalid)
	}
	return s.begin(ctx, req, st)
}

// begin finds the point, records the job, starts it and returns once
// its export serves.
func (s *Service) begin(ctx context.Context, req wire.RecoveryRequest, st *backup.RecoverState) (wire.Recovery, error) {
	r, release, err := s.repository(ctx, req.Policy)
	if err != nil {
		return wire.Recovery{}, err
	}
	m, err := backup.FindPoint(ctx, r, req.Point, req.Disk)
	if err != nil {
		release()
		return wire.Recovery{}, err
	}
	jctx, cancel := context.WithCancel(s.ctx)
	run, err := s.o.Jobs.Begin(jobs.Spec{Kind: wire.JobRecover, Policy: req.Policy, Source: req.ToDisk, Cancel: cancel})
	if err != nil {
		cancel()
		release()
		return wire.Recovery{}, err
	}
	s.mu.Lock()
	if other := s.running[req.ToDisk]; other != "" { // lost a race with another request
		s.mu.Unlock()
		cancel()
		release()
		run.Finish(nil, fmt.Errorf("%w: %s is being recovered by %s", api.ErrRecoveryExists, req.ToDisk, other))
		return wire.Recovery{}, fmt.Errorf("%w: %s is being recovered by %s", api.ErrRecoveryExists, req.ToDisk, other)
	}
	s.running[req.ToDisk] = run.ID()
	s.mu.Unlock()
	j := &job{s: s, run: run, ctx: jctx, cancel: cancel, r: r, release: release, m: m, req: req, resumed: st, dir: s.dir(req.ToDisk), ready: make(chan error, 1)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		j.main()
		s.mu.Lock()
		delete(s.running, req.ToDisk)
		s.mu.Unlock()
	}()
	// Answer once the VM can attach (or the start failed): the socket
	// serves when the caller hears of it.
	select {
	case err := <-j.ready:
		if err != nil {
			return wire.Recovery{}, err
		}
	case <-ctx.Done():
		return wire.Recovery{}, ctx.Err()
	}
	v := s.view(req.ToDisk, m.ID.String(), backup.PhaseCopying)
	v.Job, v.Policy = run.ID(), req.Policy
	if st != nil {
		v.Phase = st.Phase
	}
	return v, nil
}

// repository opens the repository of a request: the policy's, held by
// the scheduler (release does nothing), or the host's --points-repo
// (release closes it). No credential comes with the request.
func (s *Service) repository(ctx context.Context, policy string) (r *repo.Repository, release func(), err error) {
	switch {
	case policy != "" && s.o.PolicyRepo == nil:
		return nil, nil, fmt.Errorf("%w: this host runs no policies", api.ErrPolicyNotFound)
	case policy != "":
		r, err = s.o.PolicyRepo(ctx, policy)
		return r, func() {}, err
	case s.o.OpenRepo == nil:
		return nil, nil, fmt.Errorf("%w: this host has no --points-repo: name the policy whose repository holds the point", api.ErrRecoveryNotFound)
	}
	r, err = s.o.OpenRepo(ctx)
	if err != nil {
		return nil, nil, err
	}
	return r, func() { r.Close() }, nil
}

// view describes the recovery into name.
func (s *Service) view(name, point, phase string) wire.Recovery {
	sock := s.dir(name) + ".sock"
	export := point[:min(8, len(point))] // as repo.ID.Short, a name the export answers to
	return wire.Recovery{ToDisk: name, Point: point, Phase: phase, Socket: sock, Export: export,
		URI:  (&url.URL{Scheme: "nbd+unix", Path: "/" + export, RawQuery: "socket=" + sock}).String(),
		Qemu: fmt.Sprintf("-drive driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=%s,file.export=%s,file.reconnect-delay=30,cache=none,if=virtio", sock, export)}
}

// List implements api.Recoveries: every recovery with an overlay
// directory, running or resumable, by target disk.
func (s *Service) List(context.Context) ([]wire.Recovery, error) {
	ents, err := os.ReadDir(filepath.Join(s.o.Datastore, Dir))
	if errors.Is(err, os.ErrNotExist) {
		return []wire.Recovery{}, nil
	} else if err != nil {
		return nil, err
	}
	out := []wire.Recovery{}
	for _, e := range ents {
		st, err := backup.LoadRecoverState(s.dir(e.Name()))
		if !e.IsDir() || err != nil {
			continue
		}
		v := s.view(e.Name(), st.Point, st.Phase)
		v.Policy = st.Policy
		if p, err := backup.LoadRecoverProgress(s.dir(e.Name())); err == nil {
			v.Updated = p.Updated
		}
		s.mu.Lock()
		v.Job = s.running[e.Name()]
		s.mu.Unlock()
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ToDisk < out[j].ToDisk })
	return out, nil
}

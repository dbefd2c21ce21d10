package scheduler

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/labels"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validate checks everything in p that a run would otherwise trip on.
func validate(p wire.Policy) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", api.ErrPolicyInvalid, fmt.Sprintf(format, a...))
	}
	switch {
	case !validName.MatchString(p.Name):
		return bad("name %q: want 1 to 64 letters, digits, '.', '_' or '-'", p.Name)
	case len(p.Sources.Disks)+len(p.Sources.Globs)+len(p.Sources.Labels)+len(p.Sources.URIs) == 0:
		return bad("no sources: give disks, globs, label selectors or source URIs")
	case p.Repository.Location == "":
		return bad("no repository location")
	case p.MaxConcurrent < 0 || p.Retries < 0 || p.CheckGroups < 0 || p.LimitUploadKiB < 0:
		return bad("maxConcurrent, retries, checkGroups and limitUploadKiB are 0 or more")
	}
	for _, g := range p.Sources.Globs {
		if _, err := pathMatch(g); err != nil {
			return bad("glob %q: %v", g, err)
		}
	}
	for _, q := range p.Sources.Labels {
		if _, err := labels.ParseSelector(q); err != nil {
			return bad("label selector %q: %v", q, err)
		}
	}
	for _, u := range p.Sources.URIs {
		if err := sources.Check(u); err != nil {
			return bad("source: %v", err)
		}
	}
	if _, err := quiesceOf(p.Quiesce); err != nil {
		return bad("quiesce: %v", err)
	}
	if _, err := parseSchedule(p.Schedule, p.TimeZone); err != nil {
		return err
	}
	for _, sch := range []string{p.PruneSchedule, p.CheckSchedule} {
		if _, err := parseSchedule(sch, p.TimeZone); sch != "" && err != nil {
			return err
		}
	}
	for name, d := range map[string]string{"retryBackoff": p.RetryBackoff, "staleAfter": p.StaleAfter} {
		if v, err := time.ParseDuration(d); d != "" && (err != nil || v <= 0) {
			return bad("%s %q: want a positive duration such as 10m", name, d)
		}
	}
	if _, err := keepRules(p.Retention); err != nil {
		return bad("retention within %q: %v", p.Retention.Within, err)
	}
	if p.Transport != "" {
		if _, err := transport.ParseOrder(p.Transport); err != nil {
			return bad("transport %q: %v", p.Transport, err)
		}
	}
	return nil
}

// split takes the secrets out of a requested policy.
func split(p wire.Policy) (wire.Policy, secret) {
	sec := secret{Password: p.Repository.Password, AccessKey: p.Repository.AccessKey, SecretKey: p.Repository.SecretKey}
	p.Repository.Password, p.Repository.AccessKey, p.Repository.SecretKey = "", "", ""
	p.Repository.HasPassword, p.Repository.HasS3Keys = false, false
	p.Status = nil
	return p, sec
}

// Create implements api.Policies.
func (s *Scheduler) Create(ctx context.Context, req wire.Policy) (wire.Policy, error) {
	p, sec := split(req)
	p.Created = s.o.Now().UTC()
	if err := validate(p); err != nil {
		return wire.Policy{}, err
	}
	s.mu.Lock()
	if s.recs[p.Name] != nil {
		s.mu.Unlock()
		return wire.Policy{}, fmt.Errorf("%w: %s", api.ErrPolicyExists, p.Name)
	}
	s.recs[p.Name] = &record{Policy: p}
	s.secs[p.Name] = sec
	s.polSem[p.Name] = make(chan struct{}, max(p.MaxConcurrent, 1))
	if err := s.f.save(s.recs, s.secs); err != nil {
		delete(s.recs, p.Name)
		delete(s.secs, p.Name)
		s.mu.Unlock()
		return wire.Policy{}, err
	}
	if s.env.Client != nil { // started: derive the key now, not at the first run
		s.openRepoLocked(p.Name)
	}
	s.mu.Unlock()
	return s.Get(ctx, p.Name)
}

// Update implements api.Policies. Secrets left empty keep their values;
// a changed repository or secret is opened (its key derived) again.
func (s *Scheduler) Update(ctx context.Context, name string, req wire.Policy) (wire.Policy, error) {
	if req.Name == "" {
		req.Name = name
	}
	if req.Name != name {
		return wire.Policy{}, fmt.Errorf("%w: a policy cannot be renamed (%s to %s)", api.ErrPolicyInvalid, name, req.Name)
	}
	p, sec := split(req)
	if err := validate(p); err != nil {
		return wire.Policy{}, err
	}
	s.mu.Lock()
	rec := s.recs[name]
	if rec == nil {
		s.mu.Unlock()
		return wire.Policy{}, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	old, oldSec := rec.Policy, s.secs[name]
	if sec.Password == "" {
		sec.Password = oldSec.Password
	}
	if sec.AccessKey == "" && sec.SecretKey == "" {
		sec.AccessKey, sec.SecretKey = oldSec.AccessKey, oldSec.SecretKey
	}
	p.Created = old.Created
	rec.Policy, s.secs[name] = p, sec
	if err := s.f.save(s.recs, s.secs); err != nil {
		rec.Policy, s.secs[name] = old, oldSec
		s.mu.Unlock()
		return wire.Policy{}, err
	}
	if old.MaxConcurrent != p.MaxConcurrent {
		s.polSem[name] = make(chan struct{}, max(p.MaxConcurrent, 1))
	}
	if old.Repository.Location != p.Repository.Location || sec != oldSec || old.LimitUploadKiB != p.LimitUploadKiB {
		s.retireRepoLocked(name)
		if s.env.Client != nil {
			s.openRepoLocked(name)
		}
	}
	s.mu.Unlock()
	return s.Get(ctx, name)
}

// Delete implements api.Policies; running jobs of the policy go on.
func (s *Scheduler) Delete(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, sec := s.recs[name], s.secs[name]
	if rec == nil {
		return fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	delete(s.recs, name)
	delete(s.secs, name)
	if err := s.f.save(s.recs, s.secs); err != nil {
		s.recs[name], s.secs[name] = rec, sec
		return err
	}
	s.retireRepoLocked(name)
	return nil
}

// Run implements api.Policies: a backup of every source now (what "backup"),
// a prune or a check.
func (s *Scheduler) Run(_ context.Context, name string, req wire.PolicyRunRequest) (wire.PolicyRun, error) {
	s.mu.Lock()
	found, started := s.recs[name] != nil, s.env.Client != nil
	s.mu.Unlock()
	if !found {
		return wire.PolicyRun{}, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	if !started {
		return wire.PolicyRun{}, fmt.Errorf("%w: the scheduler is not running yet", api.ErrPolicyInvalid)
	}
	var ids []string
	switch req.What {
	case "", "backup":
		ids = s.startBackups(name, "run now")
	case wire.JobPrune, wire.JobCheck:
		ids = s.startMaintenance(name, req.What)
	default:
		return wire.PolicyRun{}, fmt.Errorf("%w: run %q: want backup, prune or check", api.ErrPolicyInvalid, req.What)
	}
	if ids == nil {
		ids = []string{}
	}
	return wire.PolicyRun{Jobs: ids}, nil
}

// List implements api.Policies.
func (s *Scheduler) List(ctx context.Context) ([]wire.Policy, error) {
	s.mu.Lock()
	names := make([]string, 0, len(s.recs))
	for n := range s.recs {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	disks, err := s.disks()
	if err != nil {
		return nil, err
	}
	out := make([]wire.Policy, 0, len(names))
	for _, n := range names {
		if p, ok := s.view(n, disks); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// Get implements api.Policies.
func (s *Scheduler) Get(_ context.Context, name string) (wire.Policy, error) {
	disks, err := s.disks()
	if err != nil {
		return wire.Policy{}, err
	}
	p, ok := s.view(name, disks)
	if !ok {
		return p, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	return p, nil
}

// view is a policy as answers show it: no secrets, with its status.
func (s *Scheduler) view(name string, disks inventory) (wire.Policy, bool) {
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.recs[name]
	if rec == nil {
		return wire.Policy{}, false
	}
	p, sec := rec.Policy, s.secs[name]
	p.Repository.HasPassword = sec.Password != ""
	p.Repository.HasS3Keys = sec.AccessKey != ""
	st := &wire.PolicyStatus{Sources: []wire.SourceStatus{}}
	st.KeyReady, st.KeyError = s.readyLocked(name)
	st.Repository = s.sizes[name]
	stale := time.Duration(0)
	if sch, err := parseSchedule(p.Schedule, p.TimeZone); err == nil {
		next := sch.Next(lastOr(rec.LastRun, p.Created))
		if next.Before(now) {
			next = now
		}
		if !p.Paused {
			st.NextRun = &next
		}
		stale = parseDur(p.StaleAfter, 2*period(sch, now))
	}
	st.NextPrune = nextOf(p.PruneSchedule, p.TimeZone, lastOr(rec.LastPrune, p.Created), now, p.Paused)
	st.NextCheck = nextOf(p.CheckSchedule, p.TimeZone, lastOr(rec.LastCheck, p.Created), now, p.Paused)
	for _, d := range matchSources(p, disks) {
		ss := wire.SourceStatus{Disk: d}
		if sources.IsURI(d) {
			ss.Kind = wire.SourceKindVM
		}
		since := p.Created
		if src := s.sources[name][d]; src != nil {
			ss.LastJob, ss.LastState, ss.FailuresSince = src.lastJob, src.lastState, src.failuresSince
			if !src.lastSuccess.IsZero() {
				t := src.lastSuccess
				ss.LastSuccess, since = &t, t
			}
		}
		ss.Stale = stale > 0 && now.Sub(since) > stale
		st.Sources = append(st.Sources, ss)
	}
	p.Status = st
	return p, true
}

func nextOf(spec, tz string, last, now time.Time, paused bool) *time.Time {
	if spec == "" || paused {
		return nil
	}
	sch, err := parseSchedule(spec, tz)
	if err != nil {
		return nil
	}
	n := sch.Next(last)
	if n.Before(now) {
		n = now
	}
	return &n
}

// pathMatch validates a glob (path.Match reports a bad pattern only
// when matching).
func pathMatch(g string) (bool, error) {
	if strings.TrimSpace(g) == "" {
		return false, fmt.Errorf("empty glob")
	}
	return path.Match(g, "")
}

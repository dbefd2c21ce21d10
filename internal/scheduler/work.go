package scheduler

import (
	"fmt"
	"strings"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

// backup runs one backup of a source for p with the repository kept
// open, then applies the retention to its points. It returns the job's
// summary and the bytes it counts (for a hypervisor source, its drives'
// added up).
func (s *Scheduler) backup(run *jobRun, p wire.Policy, src string) (any, *backup.Summary, error) {
	run.Stage("open")
	r, err := s.repoFor(run.ctx, p.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("repository %s: %w", p.Repository.Location, err)
	}
	if sources.IsURI(src) {
		sum, err := s.backupVM(run, p, src, r)
		if sum == nil {
			return nil, nil, err
		}
		return sum, &sum.Summary, err
	}
	sum, err := s.backupDisk(run, p, src, r)
	return sum, sum, err
}

// backupDisk backs up one of the host's disks, quiesced through its
// agent property with the policy's quiescing.
func (s *Scheduler) backupDisk(run *jobRun, p wire.Policy, disk string, r *repo.Repository) (*backup.Summary, error) {
	qo, err := quiesceOf(p.Quiesce)
	if err != nil {
		return nil, err
	}
	q, err := sources.DiskQuiesce(run.ctx, s.env.Client, disk, "", qo)
	if err != nil {
		return nil, err
	}
	var rep transport.Report
	open := transport.Opener(order(p), s.env, func(r transport.Report) { rep = r })
	res, err := backup.Run(run.ctx, backup.Options{Disk: disk, Host: backup.ClientHost{C: s.env.Client}, Repo: r, Open: open,
		Progress: run.Progress, Stage: run.Stage, Quiesce: q})
	if err != nil {
		run.Logf("error", "backup of %s failed: %v", disk, err)
		return nil, err
	}
	sum := logPoint(run, disk, res, rep.String())
	if err := s.retain(run, r, p, disk); err != nil {
		return &sum, fmt.Errorf("retention after point %s: %w", res.Manifest.ID.Short(), err)
	}
	return &sum, nil
}

// logPoint summarizes a backup of disk and logs its point.
func logPoint(run *jobRun, disk string, res *backup.Result, transport string) backup.Summary {
	sum := backup.Summarize(disk, res, transport, repo.OpenTimes{})
	run.Logf("info", "point %s of %s: %s, changed %d bytes, read %d, new %d, stored %d, %.2fs; %s",
		res.Manifest.ID.Short(), disk, res.Mode, sum.Changed, sum.Read, sum.NewBytes, sum.Stored, sum.Seconds, sum.Transport)
	return sum
}

// keepRules turns a policy's retention into forget's rules.
func keepRules(rt wire.PolicyRetention) (backup.Policy, error) {
	k := backup.Policy{Last: rt.Last, Hourly: rt.Hourly, Daily: rt.Daily, Weekly: rt.Weekly, Monthly: rt.Monthly, Yearly: rt.Yearly}
	if rt.Within != "" {
		if err := k.Within.Set(rt.Within); err != nil {
			return k, err
		}
	}
	return k, nil
}

// retain forgets the disk's points the policy's keep rules drop.
func (s *Scheduler) retain(run *jobRun, r *repo.Repository, p wire.Policy, disk string) error {
	rules, err := keepRules(p.Retention)
	if err != nil || rules.Empty() {
		return err
	}
	run.Stage("retention")
	ms, err := r.ListManifests(run.ctx)
	if err != nil {
		return err
	}
	var mine []*repo.Manifest
	for _, m := range ms {
		if m.Disk == disk {
			mine = append(mine, m)
		}
	}
	var forgot []string
	for _, d := range rules.Apply(mine) {
		if d.Keep {
			continue
		}
		if err := r.Forget(run.ctx, d.Manifest.ID); err != nil {
			return err
		}
		s.points.drop(p.Name, d.Manifest.ID)
		forgot = append(forgot, d.Manifest.ID.Short())
	}
	if len(forgot) > 0 {
		run.Logf("info", "retention forgot %d point(s) of %s: %s (their data goes with the next prune)", len(forgot), disk, strings.Join(forgot, " "))
	}
	return nil
}

// prune runs a prune of the policy's repository.
func (s *Scheduler) prune(run *jobRun, p wire.Policy) (any, error) {
	run.Stage("open")
	r, err := s.repoFor(run.ctx, p.Name)
	if err != nil {
		return nil, err
	}
	run.Stage("prune")
	s.points.drop(p.Name, repo.ID{}) // their read locks would hold the prune's exclusive one off
	st, err := r.PruneWith(run.ctx, repo.PruneOptions{})
	if err != nil {
		run.Logf("error", "prune failed: %v", err)
		return nil, err
	}
	run.Logf("info", "prune done: %+v", *st)
	return st, nil
}

// check checks the policy's repository, reading the round-th of the
// policy's CheckGroups groups of packs.
func (s *Scheduler) check(run *jobRun, p wire.Policy, round int) (any, error) {
	run.Stage("open")
	r, err := s.repoFor(run.ctx, p.Name)
	if err != nil {
		return nil, err
	}
	run.Stage("check")
	var o repo.CheckOptions
	subset := ""
	if g := p.CheckGroups; g > 0 {
		n := uint64(round%g) + 1
		o = repo.CheckOptions{ReadData: true, ReadPack: repo.PackGroup(n, uint64(g))}
		subset = fmt.Sprintf("%d/%d", n, g)
		run.Logf("info", "reading packs of group %s (--read-data-subset %s)", subset, subset)
	}
	start := time.Now()
	res, err := r.Check(run.ctx, o)
	sum := map[string]any{"readDataSubset": subset, "seconds": time.Since(start).Seconds()}
	if res != nil {
		sum["result"] = res
	}
	if err != nil {
		run.Logf("error", "check found errors: %v", err)
	}
	return sum, err
}

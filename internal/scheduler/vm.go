package scheduler

import (
	"fmt"
	"strings"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources"
)

// quiesceOf is a policy's quiescing as the sources package takes it.
func quiesceOf(q wire.PolicyQuiesce) (sources.Options, error) {
	o := sources.Options{Quiesce: q.Mode, PreFreeze: q.PreFreeze, PostThaw: q.PostThaw}
	if _, err := quiesce.ParsePolicy(q.Mode); err != nil {
		return o, err
	}
	if q.Timeout != "" {
		d, err := time.ParseDuration(q.Timeout)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("timeout %q: want a positive duration such as 10s", q.Timeout)
		}
		o.QuiesceTimeout = d
	}
	return o, nil
}

// vmSummary is the summary of a hypervisor source's job: its drives'
// summaries added up (the fields the console reads of any backup job)
// and each drive's.
type vmSummary struct {
	backup.Summary
	Drives []backup.Summary `json:"drives"`
}

// add counts one drive's backup into the source's summary.
func (v *vmSummary) add(d backup.Summary) {
	t := &v.Summary
	if t.ID == "" {
		t.ID, t.Mode, t.Consistency, t.ConsistencyReason = d.ID, d.Mode, d.Consistency, d.ConsistencyReason
	}
	if d.Mode != t.Mode {
		t.Mode = "mixed"
	}
	if d.Consistency != t.Consistency { // one freeze for all drives: never expected
		t.Consistency, t.ConsistencyReason = "crash", "the drives' points differ: "+d.ConsistencyReason
	}
	t.Size += d.Size
	t.Changed, t.Read, t.Lost = t.Changed+d.Changed, t.Read+d.Read, t.Lost+d.Lost
	t.NewBytes, t.Stored, t.Seconds = t.NewBytes+d.NewBytes, t.Stored+d.Stored, t.Seconds+d.Seconds
	t.Transport = d.Transport
	for k, sec := range d.Phases {
		t.Phases[k] += sec
	}
	v.Drives = append(v.Drives, d)
}

// backupVM backs up every drive of the hypervisor source uri (views of
// all drives taken at once, in one freeze) and applies the retention to
// each drive's points.
func (s *Scheduler) backupVM(run *jobRun, p wire.Policy, uri string, r *repo.Repository) (*vmSummary, error) {
	o, err := quiesceOf(p.Quiesce)
	if err != nil {
		return nil, err
	}
	o.Scratch, o.Tag = s.o.Scratch, sources.Tag(r)
	run.Stage("connect")
	vm, err := s.o.OpenSource(run.ctx, uri, o)
	if err != nil {
		run.Logf("error", "opening %s: %v", uri, err)
		return nil, err
	}
	run.Logf("info", "source %s: drives %s", uri, strings.Join(vm.Disks(), " "))
	sum := &vmSummary{Summary: backup.Summary{Disk: uri, Phases: map[string]float64{}}, Drives: []backup.Summary{}}
	err = sources.Backup(run.ctx, vm, func(string) backup.Options {
		return backup.Options{Repo: r, Progress: run.Progress, Stage: run.Stage}
	}, func(disk string, res *backup.Result, err error) error {
		if err != nil {
			run.Logf("error", "backup of %s failed: %v", disk, err)
			return fmt.Errorf("%s: %w", disk, err)
		}
		d := logPoint(run, disk, res, sources.Report().String())
		sum.add(d)
		if err := s.retain(run, r, p, disk); err != nil {
			return fmt.Errorf("retention after point %s: %w", res.Manifest.ID.Short(), err)
		}
		return nil
	})
	return sum, err
}

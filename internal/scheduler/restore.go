package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// Restore implements api.Policies: it restores a point of the policy's
// repository to a new file or a new disk, as a job.
func (s *Scheduler) Restore(ctx context.Context, name string, req wire.RestoreRequest) (wire.PolicyRun, error) {
	switch {
	case req.Point == "":
		return wire.PolicyRun{}, fmt.Errorf("%w: no point", api.ErrPolicyInvalid)
	case countTrue(req.ToFile != "", req.ToDisk != "", req.Rollback) != 1:
		return wire.PolicyRun{}, fmt.Errorf("%w: give one of toFile, toDisk and rollback", api.ErrPolicyInvalid)
	case req.ToFile != "" && !filepath.IsAbs(req.ToFile):
		return wire.PolicyRun{}, fmt.Errorf("%w: toFile %q is not an absolute path", api.ErrPolicyInvalid, req.ToFile)
	}
	if req.ToFile != "" {
		if _, err := os.Lstat(req.ToFile); err == nil {
			return wire.PolicyRun{}, fmt.Errorf("%w: %s exists (a restore never overwrites a file)", api.ErrPolicyInvalid, req.ToFile)
		}
	}
	s.mu.Lock()
	rec, started := s.recs[name], s.env.Client != nil
	s.mu.Unlock()
	if rec == nil {
		return wire.PolicyRun{}, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	if !started {
		return wire.PolicyRun{}, fmt.Errorf("%w: the scheduler is not running yet", api.ErrPolicyInvalid)
	}
	r, err := s.repoFor(ctx, name)
	if err != nil {
		return wire.PolicyRun{}, err
	}
	m, err := backup.FindPoint(ctx, r, req.Point, "")
	if err != nil {
		return wire.PolicyRun{}, fmt.Errorf("%w: point %s: %v", api.ErrPolicyInvalid, req.Point, err)
	}
	run, err := s.begin(jobs.Spec{Kind: wire.JobRestore, Policy: name, Source: m.Disk})
	if err != nil {
		return wire.PolicyRun{}, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sum, err := s.restore(run, rec.Policy, r, m, req)
		s.end(run, sum, err)
	}()
	return wire.PolicyRun{Jobs: []string{run.ID()}}, nil
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// rollback writes back into the point's own disk what CBT says changed
// since the point, every chunk verified.
func (s *Scheduler) rollback(run *jobRun, p wire.Policy, r *repo.Repository, m *repo.Manifest) (any, error) {
	run.Stage("target")
	target, _, err := transport.OpenTarget(run.ctx, order(p), s.env, m.Disk)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	run.Logf("info", "rolling %s back to point %s in place (only what changed since)", m.Disk, m.ID.Short())
	run.Stage("rollback")
	res, err := backup.Rollback(run.ctx, backup.RollbackOptions{Host: backup.ClientHost{C: s.env.Client}, Disk: m.Disk,
		Repo: r, Manifest: m.ID, Target: target, Workers: 4, Progress: run.Progress})
	if err != nil {
		run.Logf("error", "rollback failed: %v", err)
		return nil, err
	}
	run.Logf("info", "rolled back: CBT reported %d bytes changed since; %d bytes written, every chunk's hash checked", res.ChangedBytes, res.BytesWritten)
	return map[string]any{"point": m.ID.String(), "disk": m.Disk, "target": "rollback of " + m.Disk,
		"changedBytes": res.ChangedBytes, "bytesWritten": res.BytesWritten, "seconds": res.Duration.Seconds()}, nil
}

func order(p wire.Policy) string {
	if p.Transport == "" {
		return transport.DefaultOrder
	}
	return p.Transport
}

// restore writes point m to the request's target, every chunk verified.
func (s *Scheduler) restore(run *jobRun, p wire.Policy, r *repo.Repository, m *repo.Manifest, req wire.RestoreRequest) (any, error) {
	if req.Rollback {
		return s.rollback(run, p, r, m)
	}
	run.Stage("target")
	target, isZero, where, err := s.restoreTarget(run.ctx, p, m, req)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	run.Logf("info", "restoring point %s of %s (%d bytes) to %s", m.ID.Short(), m.Disk, m.Size, where)
	run.Stage("restore")
	res, err := backup.Restore(run.ctx, backup.RestoreOptions{Repo: r, Manifest: m.ID, Target: target, TargetIsZero: isZero,
		Workers: 4, Progress: run.Progress})
	if err != nil {
		target.Close()
		if req.ToFile != "" {
			os.Remove(req.ToFile)
		}
		run.Logf("error", "restore failed: %v", err)
		return nil, err
	}
	run.Logf("info", "restored: %d bytes written, %d zero chunks, every chunk's hash checked, %s", res.BytesWritten, res.ZeroSlots, res.Duration.Round(time.Millisecond))
	return map[string]any{"point": m.ID.String(), "disk": m.Disk, "size": m.Size, "target": where,
		"bytesWritten": res.BytesWritten, "zeroChunks": res.ZeroSlots, "seconds": res.Duration.Seconds()}, nil
}

func (s *Scheduler) restoreTarget(ctx context.Context, p wire.Policy, m *repo.Manifest, req wire.RestoreRequest) (transport.Target, bool, string, error) {
	if req.ToFile != "" {
		t, err := transport.CreateFile(req.ToFile, int64(m.Size))
		return t, true, "file " + req.ToFile, err
	}
	if _, err := s.env.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: req.ToDisk, Size: int64(m.Size)}); err != nil {
		return nil, false, "", err
	}
	t, _, err := transport.OpenTarget(ctx, order(p), s.env, req.ToDisk)
	return t, false, "new disk " + req.ToDisk, err
}

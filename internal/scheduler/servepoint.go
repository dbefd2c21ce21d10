package scheduler

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
)

// ServePoint implements api.Policies: it serves a point of the policy's
// repository over NBD (instant recovery) as a job that runs until it is
// canceled, every chunk verified as it is read.
func (s *Scheduler) ServePoint(ctx context.Context, name string, req wire.ServePointRequest) (wire.PolicyRun, error) {
	s.mu.Lock()
	rec, started := s.recs[name], s.env.Client != nil
	s.mu.Unlock()
	switch {
	case rec == nil:
		return wire.PolicyRun{}, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	case !started:
		return wire.PolicyRun{}, fmt.Errorf("%w: the scheduler is not running yet", api.ErrPolicyInvalid)
	case req.Point == "":
		return wire.PolicyRun{}, fmt.Errorf("%w: no point", api.ErrPolicyInvalid)
	}
	r, err := s.repoFor(ctx, name)
	if err != nil {
		return wire.PolicyRun{}, err
	}
	m, err := backup.FindPoint(ctx, r, req.Point, "")
	if err != nil {
		return wire.PolicyRun{}, fmt.Errorf("%w: point %s: %v", api.ErrPolicyInvalid, req.Point, err)
	}
	run, err := s.begin(jobs.Spec{Kind: wire.JobServePoint, Policy: name, Source: m.Disk})
	if err != nil {
		return wire.PolicyRun{}, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.servePoint(run, r, m)
		s.end(run, map[string]any{"point": m.ID.String(), "disk": m.Disk}, err)
	}()
	return wire.PolicyRun{Jobs: []string{run.ID()}}, nil
}

// servePoint serves m on DATASTORE/points/JOB.sock until the job ends.
func (s *Scheduler) servePoint(run *jobRun, r *repo.Repository, m *repo.Manifest) error {
	run.Stage("open")
	lock, err := r.LockRead(run.ctx) // a prune waits while the point is served
	if err != nil {
		return err
	}
	defer lock.KeepFresh(run.ctx)()
	im, err := r.OpenImage(run.ctx, m.ID)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.o.Datastore, "points")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	lns, err := daemon.ListenUnix(dir, "", run.ID()+".sock", 0o600, -1)
	if err != nil {
		return err
	}
	sock := lns[0].Addr().String()
	exp := backup.NewPointExport(im)
	exp.OnError = func(off int64, err error) { run.Logf("error", "read at %d failed: %v", off, err) }
	srv := nbd.NewServer(backup.PointExporter{Export: exp}, nbd.ServerOptions{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lns[0]) }()
	uri := (&url.URL{Scheme: "nbd+unix", Path: "/", RawQuery: "socket=" + sock}).String()
	run.Stage("serving")
	run.Logf("info", "serving point %s of %s (%d bytes) read-only at %s", m.ID.Short(), m.Disk, m.Size, uri)
	run.Logf("info", "boot it through an overlay that takes the writes: qemu-img create -f qcow2 -F raw -b '%s' %s-overlay.qcow2", uri, m.Disk)
	<-run.ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	<-done
	os.Remove(sock)
	run.Logf("info", "stopped serving")
	return run.ctx.Err()
}

package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// ErrHostStopped ends a recovery's job as interrupted when the host
// stops under it; its overlay is kept for a resume.
var ErrHostStopped = errors.New("recovery: the host stopped; resume the recovery")

// job is one run of a recovery (a new one or a resume).
type job struct {
	s       *Service
	run     *jobs.Run
	ctx     context.Context // ends at cancel or host stop
	cancel  context.CancelFunc
	r       *repo.Repository
	release func() // gives r back: closes it unless a policy's
	m       *repo.Manifest
	req     wire.RecoveryRequest
	resumed *backup.RecoverState // nil: a new recovery
	dir     string
	// ready hears once: nil when the export serves, or why it never will
	ready chan error
	once  sync.Once
}

// serving reports that the export serves (err nil) or cannot.
func (j *job) serving(err error) { j.once.Do(func() { j.ready <- err }) }

// Summary is what a recovery's job keeps when it ends.
type Summary struct {
	Point     string `json:"point"`
	ToDisk    string `json:"toDisk"`
	Switched  bool   `json:"switched"`
	Copied    int64  `json:"copiedChunks"`
	Resumed   int64  `json:"resumedChunks"`
	Rewritten int64  `json:"rewrittenChunks"`
}

func (j *job) main() {
	defer j.cancel()
	defer j.release()
	sum := &Summary{Point: j.m.ID.String(), ToDisk: j.req.ToDisk}
	err := j.recover(sum)
	j.serving(fmt.Errorf("recovery ended before it served: %w", err))
	if j.s.ctx.Err() != nil {
		j.run.Interrupt(ErrHostStopped)
		return
	}
	j.run.Finish(sum, err)
}

// recover serves the point, copies it and switches (R1–R4 of
// docs/overlay.md hold as for the CLI's recover: this is the same
// backup.Recover). It returns when the job is canceled: before the
// switch with the overlay kept, after it with the recovery's directory
// removed.
func (j *job) recover(sum *Summary) error {
	j.run.Stage("open")
	lock, err := j.r.LockRead(j.ctx) // a prune waits while the point is served
	if err != nil {
		return err
	}
	defer lock.KeepFresh(j.ctx)()
	exp, err := j.pointExport()
	if err != nil {
		return err
	}
	defer exp.Wait()
	if j.resumed != nil && j.resumed.Phase == backup.PhaseSwitched {
		return j.serveSwitched(exp, sum)
	}
	if err := os.MkdirAll(j.dir, 0o700); err != nil {
		return err
	}
	ov, err := overlay.Open(j.dir, j.m.ID.String(), int64(j.m.Size))
	if err != nil {
		return err
	}
	defer func() { // the overlay is kept for a resume, synced
		if ov != nil {
			ov.Sync()
			ov.Close()
		}
	}()
	w, err := backup.NewWritableExport(exp, ov)
	if err != nil {
		return err
	}
	w.OnError = func(op string, off int64, err error) { j.run.Logf("error", "%s at %d failed: %v", op, off, err) }
	target, err := j.start(ov)
	if err != nil {
		return err
	}
	defer target.Close()
	stop, err := j.serve(backup.WritableExporter{Export: w})
	if err != nil {
		return err
	}
	defer stop()
	if err := j.copy(w, target, sum); err != nil {
		return err
	}
	ov = nil // Recover removed it
	return j.switched()
}

// pointExport opens the point's image with the chunk cache and
// read-ahead the request asks for.
func (j *job) pointExport() (*backup.PointExport, error) {
	im, err := j.r.OpenImage(j.ctx, j.m.ID)
	if err != nil {
		return nil, err
	}
	cache := j.req.CacheMiB
	if cache == 0 {
		cache = 64
	}
	im.SetCacheChunks(int((int64(cache) << 20) / int64(im.ChunkSize())))
	exp := backup.NewPointExport(im)
	exp.SetReadAhead(j.ctx, 16)
	exp.OnError = func(off int64, err error) { j.run.Logf("error", "read of the point at %d failed: %v", off, err) }
	return exp, nil
}

// start records a new recovery (recover.json) and opens the new disk,
// creating it; a new recovery whose disk cannot be made leaves nothing.
func (j *job) start(ov *overlay.Overlay) (transport.Target, error) {
	if j.resumed == nil {
		st := backup.RecoverState{Point: j.m.ID.String(), Disk: j.req.ToDisk, Phase: backup.PhaseCopying, Policy: j.req.Policy}
		if err := backup.SaveRecoverState(j.dir, st); err != nil {
			return nil, err
		}
	}
	t, err := j.openTarget()
	if err != nil && j.resumed == nil { // nothing served, nothing copied
		ov.Close()
		err = errors.Join(err, os.RemoveAll(j.dir))
	}
	return t, err
}

// openTarget creates the disk (a resume finds it made) and opens it
// through the host's own transports.
func (j *job) openTarget() (transport.Target, error) {
	j.s.mu.Lock()
	env := j.s.env
	j.s.mu.Unlock()
	t, rep, err := OpenTarget(j.ctx, env, transport.DefaultOrder, j.req.ToDisk, int64(j.m.Size), j.resumed != nil)
	if errors.Is(err, client.ErrExists) {
		return nil, fmt.Errorf("%w: disk %s exists already: recover into a new disk", api.ErrRecoveryExists, j.req.ToDisk)
	} else if err != nil {
		return nil, err
	}
	j.run.Logf("info", "recovering into disk %s: %s", j.req.ToDisk, rep)
	return t, nil
}

// serve serves exporter on the recovery's socket (0600) until stop.
func (j *job) serve(exporter nbd.Exporter) (stop func(), err error) {
	v := j.s.view(j.req.ToDisk, j.m.ID.String(), "")
	lns, err := daemon.ListenUnix(filepath.Dir(v.Socket), v.Socket, "", 0o600, -1)
	if err != nil {
		return nil, err
	}
	srv := nbd.NewServer(exporter, nbd.ServerOptions{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lns[0]) }()
	j.serving(nil)
	j.run.Logf("info", "serving point %s of %s (%d bytes) read-write at %s; attach: %s", j.m.ID.Short(), j.m.Disk, j.m.Size, v.URI, v.Qemu)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
		os.Remove(v.Socket)
	}, nil
}

// copy runs backup.Recover with the job's progress. A failure before the
// switch stops the copy only: the export keeps serving from the overlay
// (kept) until the job is canceled, and a resume continues.
func (j *job) copy(w *backup.WritableExport, target transport.Target, sum *Summary) error {
	j.run.Stage("copying")
	rep := backup.RecoverProgress{Point: j.m.ID.String(), Disk: j.req.ToDisk, Phase: backup.PhaseCopying, Total: int64(j.m.Size), PID: os.Getpid()}
	res, err := backup.Recover(j.ctx, backup.RecoverOptions{Export: w, Target: target, Workers: j.req.Workers,
		Rate: int64(j.req.RateMiB * (1 << 20)), Checkpoint: j.s.o.Checkpoint,
		Progress: func(done, total int64) {
			j.run.Progress(done, total)
			rep.Done, rep.Updated = done, time.Now().UTC()
			backup.SaveRecoverProgress(j.dir, rep) // a report for List, not state
		}})
	if res != nil {
		sum.Copied, sum.Resumed, sum.Rewritten = res.Copied, res.Resumed, res.Rewritten
	}
	switch {
	case err == nil || w.Switched():
		sum.Switched = true
		if err != nil {
			j.run.Logf("warn", "switched to the new disk, but the overlay's files are left: %v", err)
		}
		j.run.Logf("info", "switched to disk %s: %d chunks copied, %d resumed as copied, %d copied again after guest writes", j.req.ToDisk, sum.Copied, sum.Resumed, sum.Rewritten)
		return nil
	case j.ctx.Err() != nil:
		return j.ctx.Err() // canceled or the host stopping: the overlay is kept
	}
	j.run.Stage("stopped")
	j.run.Logf("error", "copy stopped: %v; still serving from the overlay, which is kept: cancel the job and resume the recovery", err)
	<-j.ctx.Done()
	return fmt.Errorf("recovery copy stopped (resume it): %w", err)
}

// switched serves the new disk until the job is canceled; then, unless
// the host is stopping, the recovery is over and its directory goes.
func (j *job) switched() error {
	j.run.Stage("switched")
	<-j.ctx.Done()
	if j.s.ctx.Err() != nil {
		return nil // the host stops: a resume serves the disk again
	}
	return errors.Join(backup.RemoveRecoverState(j.dir), os.RemoveAll(j.dir))
}

// serveSwitched resumes a recovery that had switched: everything from the
// new disk; what is left of the overlay is deleted.
func (j *job) serveSwitched(exp *backup.PointExport, sum *Summary) error {
	w, done, err := SwitchedExport(j.dir, exp, j.openTarget)
	if err != nil {
		return err
	}
	defer done()
	stop, err := j.serve(backup.WritableExporter{Export: w})
	if err != nil {
		return err
	}
	defer stop()
	sum.Switched = true
	return j.switched()
}

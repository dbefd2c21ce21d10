package qemu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// Sentinel errors of a restore into a running VM.
var (
	// ErrSize: the restore point does not have the drive's size (nothing
	// was done; resize the drive first, or restore to a file).
	ErrSize = errors.New("the restore point's size is not the drive's")
	// ErrLeftPaused: the restore into the VM failed after the VM was
	// paused; the VM is left paused, never resumed on a drive that may be
	// half written. The error says what was done.
	ErrLeftPaused = errors.New("restore into the VM failed: the VM is left paused")
)

// IntoOptions restore a point into one of the VM's drives.
type IntoOptions struct {
	Repo     *repo.Repository
	Manifest *repo.Manifest
	Workers  int
	Progress func(done, total int64)
	// Hook, if set, is called at each step: "paused", then
	// StepExporting and StepCommitting once recorded, and
	// "committing-job" once the commit job runs; tests kill the
	// process there.
	Hook func(step string)
}

// IntoResult describes a finished restore into a drive.
type IntoResult struct {
	*backup.RestoreResult
	Drive string // the drive's repository disk name
	// Partial: only the areas the drive's bitmaps marked since the point
	// were written (ChangedBytes of them); else the whole point, Reason
	// saying why.
	Partial      bool
	ChangedBytes int64
	Reason       string
	WasRunning   bool // the VM was running, and was resumed
	// RootVerified: the whole drive, read back after the write, has the
	// point's root (false for a point without one).
	RootVerified bool
	Reset        []string // blockwise's bitmaps removed from the drive
}

// RestoreInto writes a restore point into one of the running VM's drives
// (the source's only chosen drive, or the point's own): the VM is paused,
// the point is written into a private qcow2 overlay exported writable on
// QEMU's NBD server (a running drive's guest device does not share write
// access, so the drive itself cannot be exported writable), the overlay is
// committed into the drive (blockdev-snapshot + active block-commit, which
// pivots the device back), the whole drive is hashed against the point's
// root, and the VM resumes only if it was running. Any error after the
// pause leaves the VM paused (ErrLeftPaused). The drive's bitmaps are
// reset and a marker left, so the next backup reads it whole and says why.
// A state file records each step (intostate.go), so a SIGKILLed restore
// is finished or undone by the next Open of the VM (intorecover.go).
func (s *Source) RestoreInto(ctx context.Context, o IntoOptions) (*IntoResult, error) {
	d, err := s.restoreDrive(o.Manifest)
	if err != nil {
		return nil, err
	}
	info, err := s.nodeInfo(ctx, d.node)
	if err != nil {
		return nil, err
	}
	if info.Image.VirtualSize != int64(o.Manifest.Size) {
		return nil, fmt.Errorf("%w: point %s has %d bytes, drive %s %d", ErrSize, o.Manifest.ID.Short(), o.Manifest.Size, d.disk, info.Image.VirtualSize)
	}
	r, err := s.startInto(ctx, d, o, info.Image.VirtualSize)
	if err != nil {
		return nil, err
	}
	defer r.end()
	if err := s.control().Pause(ctx); err != nil {
		return nil, err
	}
	r.step("paused", false) // the test hook only
	res, err := r.paused(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLeftPaused, err)
	}
	if res.WasRunning = r.st.WasRunning; res.WasRunning {
		if err := s.control().Resume(ctx); err != nil {
			return nil, fmt.Errorf("restored and verified, but resuming the VM failed: %w", err)
		}
	}
	return res, nil
}

// startInto makes the restore's private directory and records its
// state before the VM is paused.
func (s *Source) startInto(ctx context.Context, d *drive, o IntoOptions, size int64) (*intoRun, error) {
	running, err := s.control().Running(ctx)
	if err != nil {
		return nil, err
	}
	r := &intoRun{s: s, d: d, o: o, size: size, id: fmt.Sprintf("bw-%d-r%d", s.pid, time.Now().UnixNano())}
	if r.dir, err = s.workspace().MakeDir(ctx); err != nil {
		return nil, err
	}
	r.st = &intoState{Key: s.key(), ID: r.id, Node: d.node, Point: o.Manifest.ID.String(), Dir: r.dir,
		WasRunning: running, Step: StepPausing, Size: o.Manifest.Size}
	if t := o.Manifest.Tree; t != nil {
		r.st.Root, r.st.BlockSize = t.Root, t.BlockSize
	}
	if err := r.st.save(s.stateDir()); err != nil {
		s.workspace().RemoveDir(r.dir)
		return nil, err
	}
	return r, nil
}

// end removes the state file and the private directory (unless the
// drive still runs on the overlay in it): the restore returned.
func (r *intoRun) end() {
	if !r.keepDir {
		r.s.workspace().RemoveDir(r.dir)
	}
	r.st.remove(r.s.stateDir())
}

// step records a step in the state file (save: durably, before going
// on) and calls the test hook.
func (r *intoRun) step(step string, save bool) error {
	if save {
		r.st.Step = step
		if err := r.st.save(r.s.stateDir()); err != nil {
			return err
		}
	}
	if r.o.Hook != nil {
		r.o.Hook(step)
	}
	return nil
}

// control is Options.Control, else pausing through QMP (stop, cont).
func (s *Source) control() *Control {
	if s.o.Control != nil {
		return s.o.Control
	}
	return &Control{
		Running: s.running,
		Pause:   func(ctx context.Context) error { return s.c.Execute(ctx, "stop", nil, nil) },
		Resume:  func(ctx context.Context) error { return s.c.Execute(ctx, "cont", nil, nil) },
	}
}

// restoreDrive is the drive a point goes into: the point's own when the
// source chose it, else the only chosen drive.
func (s *Source) restoreDrive(m *repo.Manifest) (*drive, error) {
	for _, d := range s.drives {
		if d.disk == m.Disk {
			return d, nil
		}
	}
	if len(s.drives) == 1 {
		return s.drives[0], nil
	}
	return nil, fmt.Errorf("%w: VM %s has no drive %s: choose one with ?drive=NAME", ErrNoDrive, s.name, m.Disk)
}

// running reports whether the VM's CPUs run (query-status).
func (s *Source) running(ctx context.Context) (bool, error) {
	var st struct {
		Running bool `json:"running"`
	}
	err := s.c.Execute(ctx, "query-status", nil, &st)
	return st.Running, err
}

// paused does the restore with the VM paused, QEMU's NBD server
// listening in the private directory.
func (r *intoRun) paused(ctx context.Context, info *nodeInfo) (res *IntoResult, err error) {
	r.sock = r.dir + "/nbd.sock"
	if err := r.s.c.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
		"data": map[string]any{"path": r.sock}}}, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNBDServer, err)
	}
	defer func() {
		if serr := r.s.c.Execute(context.WithoutCancel(ctx), "nbd-server-stop", nil, nil); serr != nil && err == nil {
			err = serr
		}
	}()
	local, stop, err := r.s.workspace().Forward(ctx, r.sock)
	if err != nil {
		return nil, err
	}
	defer stop()
	r.local = local
	if err := r.step(StepExporting, true); err != nil {
		return nil, err
	}
	return r.run(ctx, info)
}

// intoRun is one restore into a paused drive.
type intoRun struct {
	s         *Source
	d         *drive
	o         IntoOptions
	size      int64
	id        string // names the exports (bw-PID-rN), overlay (bwro-) and temp bitmap (bwtmp-)
	dir, sock string // on QEMU's host
	local     string // sock, reachable here
	keepDir   bool   // the drive still runs on the overlay in dir
	st        *intoState
}

func (r *intoRun) uri(name string) string { return "nbd+unix:///" + name + "?socket=" + r.local }

// run computes what to write, resets the bitmaps, writes the point
// through the overlay, commits it and verifies the drive.
func (r *intoRun) run(ctx context.Context, info *nodeInfo) (*IntoResult, error) {
	res := &IntoResult{Drive: r.d.disk}
	areas, err := r.changedAreas(ctx, info, res)
	if err != nil {
		return nil, err
	}
	if res.Reset, err = r.s.resetBitmaps(ctx, r.d); err != nil {
		return nil, fmt.Errorf("reset the drive's bitmaps before writing it: %w", err)
	}
	res.RestoreResult, err = r.writeOverlay(ctx, areas, res.Partial)
	if err != nil {
		return nil, err
	}
	if err := r.commit(ctx); err != nil {
		return nil, err
	}
	if res.RootVerified, err = r.verify(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

// changedAreas are the areas where the drive may differ from the point:
// the union of the owned bitmaps since the point's own, when the chain
// from it holds; else nil and res.Reason (the whole point is written).
func (r *intoRun) changedAreas(ctx context.Context, info *nodeInfo, res *IntoResult) ([]backup.Area, error) {
	m := r.o.Manifest
	if whole := r.s.control().Whole; whole != "" {
		res.Reason = whole
		return nil, nil
	}
	v := &view{d: r.d, id: r.id, size: r.size, owned: map[string]bitmapInfo{}}
	if err := r.s.scanBitmaps(ctx, r.d, info, v); err != nil {
		return nil, err
	}
	if m.DiskUUID != "qemu:"+r.d.disk {
		res.Reason = fmt.Sprintf("the point is of %s, not of this drive", m.Disk)
		return nil, nil
	}
	names, err := v.chain(m.ChangeID)
	if err != nil {
		res.Reason = err.Error()
		return nil, nil
	}
	tmp := "bwtmp-" + r.id[3:]
	defer r.s.removeBitmap(context.WithoutCancel(ctx), r.d.node, tmp)
	if err := r.s.c.Execute(ctx, "block-dirty-bitmap-add", map[string]any{"node": r.d.node, "name": tmp,
		"persistent": false, "disabled": true}, nil); err != nil {
		return nil, err
	}
	if err := r.s.c.Execute(ctx, "block-dirty-bitmap-merge", map[string]any{"node": r.d.node, "target": tmp, "bitmaps": names}, nil); err != nil {
		return nil, err
	}
	exp := r.id + "-b"
	if err := r.s.c.Execute(ctx, "block-export-add", map[string]any{"type": "nbd", "id": exp, "node-name": r.d.node,
		"name": exp, "writable": false, "bitmaps": []string{tmp}}, nil); err != nil {
		return nil, fmt.Errorf("export %s with its bitmap: %w", r.d.node, err)
	}
	defer r.s.delExport(context.WithoutCancel(ctx), exp)
	areas, err := Areas(ctx, r.uri(exp), "qemu:dirty-bitmap:"+tmp, r.size)
	if err != nil {
		return nil, err
	}
	res.Partial = true
	for _, a := range areas {
		res.ChangedBytes += a.Length
	}
	return areas, nil
}

// resetBitmaps removes blockwise's bitmaps from the drive and leaves the
// marker that tells the next backup why its chain ended.
func (s *Source) resetBitmaps(ctx context.Context, d *drive) ([]string, error) {
	if s.control().Whole != "" {
		return nil, nil // the manager's bitmaps: it resets them itself
	}
	info, err := s.nodeInfo(ctx, d.node)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, b := range info.Bitmaps {
		if b.Name == s.restoredMarker() || strings.HasPrefix(b.Name, s.prefix()) {
			if err := s.removeBitmap(ctx, d.node, b.Name); err != nil {
				return removed, err
			}
			if b.Name != s.restoredMarker() {
				removed = append(removed, b.Name)
			}
		}
	}
	return removed, s.c.Execute(ctx, "block-dirty-bitmap-add", map[string]any{"node": d.node, "name": s.restoredMarker(),
		"persistent": d.format == "qcow2", "disabled": true}, nil)
}

// restoredMarker names the empty bitmap a restore leaves on a drive.
func (s *Source) restoredMarker() string { return "blockwise-restored-" + s.o.Tag }

// writeOverlay writes the point (the areas when partial, else all of it,
// zeroes included) into a new qcow2 overlay without a backing file,
// exported writable, each chunk read back and compared.
func (r *intoRun) writeOverlay(ctx context.Context, areas []backup.Area, partial bool) (*backup.RestoreResult, error) {
	path := r.dir + "/overlay.qcow2"
	if err := r.s.workspace().CreateImage(ctx, path, r.size); err != nil {
		return nil, err
	}
	ov := "bwro-" + r.id[3:]
	if err := r.s.c.Execute(ctx, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": ov, "backing": nil,
		"file": map[string]any{"driver": "file", "filename": path}}, nil); err != nil {
		return nil, fmt.Errorf("add the restore overlay: %w", err)
	}
	exp := r.id + "-w"
	if err := r.s.c.Execute(ctx, "block-export-add", map[string]any{"type": "nbd", "id": exp, "node-name": ov,
		"name": exp, "writable": true}, nil); err != nil {
		r.s.c.Execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": ov}, nil)
		return nil, fmt.Errorf("export the restore overlay writable: %w", err)
	}
	res, err := r.writeExport(ctx, exp, areas, partial)
	if derr := r.s.delExport(context.WithoutCancel(ctx), exp); err == nil {
		err = derr
	}
	if err != nil {
		r.s.c.Execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": ov}, nil)
	}
	return res, err
}

func (r *intoRun) writeExport(ctx context.Context, exp string, areas []backup.Area, partial bool) (*backup.RestoreResult, error) {
	t, err := transport.DialURI(ctx, r.uri(exp), nil)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return backup.Restore(ctx, backup.RestoreOptions{Repo: r.o.Repo, Manifest: r.o.Manifest.ID, Target: t,
		Workers: r.o.Workers, ReadBack: true, Progress: r.o.Progress, Partial: partial, Areas: areas})
}

// commit makes the overlay the drive's active layer and commits it into
// the drive, the device pivoting back at the end. If the commit fails
// after the pivot to the overlay, the drive keeps running on it (the
// guest sees the restored point) and its directory is kept.
func (r *intoRun) commit(ctx context.Context) error {
	ov := "bwro-" + r.id[3:]
	if err := r.step(StepCommitting, true); err != nil {
		return err
	}
	if err := r.s.c.Execute(ctx, "blockdev-snapshot", map[string]any{"node": r.d.node, "overlay": ov}, nil); err != nil {
		r.s.c.Execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": ov}, nil)
		return fmt.Errorf("put the restore overlay over %s: %w", r.d.node, err)
	}
	job := "bwjob-" + r.id[3:]
	err := r.s.c.Execute(ctx, "block-commit", map[string]any{"job-id": job, "device": ov, "base-node": r.d.node,
		"auto-dismiss": false}, nil)
	if err == nil {
		r.step(StepCommitting+"-job", false) // the test hook only
		err = r.s.finishCommit(ctx, job)
	}
	if err != nil {
		r.keepDir = true
		return fmt.Errorf("commit the restore overlay into %s: %w (the drive now runs on the overlay %s, which holds the restored point: commit it by hand or restore again)",
			r.d.node, err, r.dir+"/overlay.qcow2")
	}
	return r.s.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": ov}, nil)
}

// finishCommit waits for an active commit to be ready, completes it and
// waits for it to conclude, returning its error.
func (s *Source) finishCommit(ctx context.Context, job string) error {
	for completed := false; ; {
		st, jerr, err := s.jobStatus(ctx, job)
		switch {
		case err != nil:
			return err
		case st == "ready" && !completed:
			if err := s.c.Execute(ctx, "job-complete", map[string]any{"id": job}, nil); err != nil {
				return err
			}
			completed = true
		case st == "concluded":
			s.c.Execute(ctx, "job-dismiss", map[string]any{"id": job}, nil)
			if jerr != "" {
				return errors.New(jerr)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// jobStatus is a job's status and error from query-jobs.
func (s *Source) jobStatus(ctx context.Context, id string) (status, jobErr string, err error) {
	var jobs []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := s.c.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
		return "", "", err
	}
	for _, j := range jobs {
		if j.ID == id {
			return j.Status, j.Error, nil
		}
	}
	return "", "", fmt.Errorf("job %s vanished", id)
}

// verify hashes the whole drive, exported read-only, against the
// point's root.
func (r *intoRun) verify(ctx context.Context) (bool, error) {
	exp := r.id + "-v"
	if err := r.s.c.Execute(ctx, "block-export-add", map[string]any{"type": "nbd", "id": exp, "node-name": r.d.node,
		"name": exp, "writable": false}, nil); err != nil {
		return false, fmt.Errorf("export %s to verify it: %w", r.d.node, err)
	}
	defer r.s.delExport(context.WithoutCancel(ctx), exp)
	t, err := transport.DialURI(ctx, r.uri(exp), nil)
	if err != nil {
		return false, err
	}
	defer t.Close()
	ok, err := backup.VerifyImage(ctx, r.o.Repo, r.o.Manifest, t, r.o.Workers)
	if err != nil {
		return false, fmt.Errorf("verify drive %s after the restore: %w", r.d.node, err)
	}
	return ok, nil
}

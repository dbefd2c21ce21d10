package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	ctl := s.control()
	running, err := ctl.Pause(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.restorePaused(ctx, d, info, o)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLeftPaused, err)
	}
	if res.WasRunning = running; running {
		if err := ctl.Resume(ctx); err != nil {
			return nil, fmt.Errorf("restored and verified, but resuming the VM failed: %w", err)
		}
	}
	return res, nil
}

// control is Options.Control, else pausing through QMP (stop, cont).
func (s *Source) control() *Control {
	if s.o.Control != nil {
		return s.o.Control
	}
	return &Control{
		Pause: func(ctx context.Context) (bool, error) {
			running, err := s.running(ctx)
			if err == nil {
				err = s.c.Execute(ctx, "stop", nil, nil)
			}
			return running, err
		},
		Resume: func(ctx context.Context) error { return s.c.Execute(ctx, "cont", nil, nil) },
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

// restorePaused does the restore with the VM paused, in a private 0700
// directory for the NBD socket and the overlay (removed at the end unless
// the drive still runs on the overlay).
func (s *Source) restorePaused(ctx context.Context, d *drive, info *nodeInfo, o IntoOptions) (res *IntoResult, err error) {
	r := &intoRun{s: s, d: d, o: o, size: info.Image.VirtualSize, id: fmt.Sprintf("bw-%d-r%d", s.pid, time.Now().UnixNano())}
	if r.dir, err = s.privateDir(); err != nil {
		return nil, err
	}
	defer func() {
		if !r.keepDir {
			os.RemoveAll(r.dir)
		}
	}()
	r.sock = filepath.Join(r.dir, "nbd.sock")
	if err := s.c.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
		"data": map[string]any{"path": r.sock}}}, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNBDServer, err)
	}
	defer func() {
		if serr := s.c.Execute(context.WithoutCancel(ctx), "nbd-server-stop", nil, nil); serr != nil && err == nil {
			err = serr
		}
	}()
	return r.run(ctx, info)
}

// privateDir makes a 0700 directory in the scratch directory, owned by
// the user QEMU runs as (the owner of its QMP socket).
func (s *Source) privateDir() (string, error) {
	dir, err := os.MkdirTemp(s.o.Scratch, "blockwise-restore-")
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(s.o.Socket); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
				os.Remove(dir)
				return "", err
			}
		}
	}
	return dir, nil
}

// intoRun is one restore into a paused drive.
type intoRun struct {
	s         *Source
	d         *drive
	o         IntoOptions
	size      int64
	id        string // names the exports (bw-PID-rN), overlay (bwro-) and temp bitmap (bwtmp-)
	dir, sock string
	keepDir   bool // the drive still runs on the overlay in dir
}

func (r *intoRun) uri(name string) string { return "nbd+unix:///" + name + "?socket=" + r.sock }

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
	path := filepath.Join(r.dir, "overlay.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatInt(r.size, 10)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create the restore overlay: %v: %s", err, out)
	}
	if fi, err := os.Stat(r.dir); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		os.Chown(path, int(st.Uid), int(st.Gid))
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
	if err := r.s.c.Execute(ctx, "blockdev-snapshot", map[string]any{"node": r.d.node, "overlay": ov}, nil); err != nil {
		r.s.c.Execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": ov}, nil)
		return fmt.Errorf("put the restore overlay over %s: %w", r.d.node, err)
	}
	job := "bwjob-" + r.id[3:]
	err := r.s.c.Execute(ctx, "block-commit", map[string]any{"job-id": job, "device": ov, "base-node": r.d.node,
		"auto-dismiss": false}, nil)
	if err == nil {
		err = r.s.finishCommit(ctx, job)
	}
	if err != nil {
		r.keepDir = true
		return fmt.Errorf("commit the restore overlay into %s: %w (the drive now runs on the overlay %s, which holds the restored point: commit it by hand or restore again)",
			r.d.node, err, filepath.Join(r.dir, "overlay.qcow2"))
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

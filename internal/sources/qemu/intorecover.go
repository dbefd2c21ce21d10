package qemu

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

// Recovery of a killed restore into a drive (docs/format.md, "Restore
// into a VM's drive: state file", R3 and R4). What QEMU holds decides, not the recorded
// step: once the overlay is the drive's active layer (blockdev-snapshot
// done) the guest sees the whole point, so the commit is finished and
// the drive holds the point; before, the drive was never written, so the
// overlay is dropped and the drive holds its old content. Never a mix:
// the commit is the only writer of the drive. The VM resumes only if the
// state says it ran before the restore paused it.

// recoverRestores finishes or undoes this VM's restores whose process
// is gone, then the restore overlays of dead processes without a state
// file (another --scratch-dir): those VMs stay paused.
func (s *Source) recoverRestores(ctx context.Context) error {
	states, err := deadStates(s.stateDir(), s.key())
	if err != nil {
		return fmt.Errorf("read the state of a killed restore: %w", err)
	}
	for _, st := range states {
		if err := s.recoverInto(ctx, st); err != nil {
			return fmt.Errorf("recover the restore of %s into %s killed at step %s: %w", st.Point, st.Node, st.Step, err)
		}
	}
	return s.recoverOrphans(ctx)
}

// recoverInto finishes or undoes one killed restore. A drive the
// commit finished is hashed against the point's root as the restore
// would have done; if it does not match (or cannot be hashed) the VM is
// left paused and the error says why (ErrLeftPaused).
func (s *Source) recoverInto(ctx context.Context, st *intoState) error {
	if err := s.delExportsOf(ctx, st.ID); err != nil {
		return err
	}
	committed, err := s.finishOverlay(ctx, st.Node, st.suffix())
	if err != nil {
		return err
	}
	var verified bool
	var verr error
	if committed {
		verified, verr = s.verifyRecovered(ctx, st)
	}
	if err := s.removeBitmap(ctx, st.Node, "bwtmp-"+st.suffix()); err != nil && !notFound(err) {
		return err
	}
	if st.Step != StepPausing {
		if err := s.stopIdleNBD(ctx); err != nil {
			return err
		}
	}
	if err := s.workspace().RemoveDir(st.Dir); err != nil {
		return err
	}
	what, err := s.endRecovered(ctx, st, committed, verified, verr)
	if err != nil {
		return err
	}
	if err := st.remove(s.stateDir()); err != nil {
		return err
	}
	s.recovered = append(s.recovered, fmt.Sprintf("a killed restore of %s into %s (at step %s) was recovered: %s", st.Point, st.Node, st.Step, what))
	if verr != nil {
		return fmt.Errorf("%w: %w", ErrLeftPaused, verr)
	}
	return nil
}

// endRecovered resumes the VM if it ran before the restore and its drive
// is what the recovery says it is, and says what the recovery did.
func (s *Source) endRecovered(ctx context.Context, st *intoState, committed, verified bool, verr error) (string, error) {
	what := "the drive keeps its old content (killed before the overlay went over it)"
	switch {
	case committed && verified:
		what = "the drive holds the whole point (the commit was finished; root verified)"
	case committed && verr == nil:
		what = "the drive holds the whole point (the commit was finished; the point has no root to verify)"
	case committed:
		return fmt.Sprintf("the commit was finished, but the drive failed its verification (%v); VM left paused", verr), nil
	}
	if !st.WasRunning {
		return what + "; VM left paused (it was not running before)", nil
	}
	if err := s.resumeIfPaused(ctx); err != nil {
		return "", err
	}
	return what + "; VM resumed", nil
}

// verifyRecovered hashes the drive whose commit a recovery finished
// against the root the restore's state recorded, as the restore itself
// would have (intoRun.verify), through a read-only export on QEMU's NBD
// server in the restore's directory: the killed process's, still
// listening, or one started there. verified is false for a point
// without a root.
func (s *Source) verifyRecovered(ctx context.Context, st *intoState) (verified bool, err error) {
	if st.Root == "" {
		return false, nil
	}
	sock := st.Dir + "/nbd.sock"
	if err := s.c.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
		"data": map[string]any{"path": sock}}}, nil); err != nil && !strings.Contains(err.Error(), "already running") {
		return false, fmt.Errorf("%w: %v", ErrNBDServer, err)
	}
	exp := st.ID + "-v"
	if err := s.c.Execute(ctx, "block-export-add", map[string]any{"type": "nbd", "id": exp, "node-name": st.Node,
		"name": exp, "writable": false}, nil); err != nil {
		return false, fmt.Errorf("export %s to verify it: %w", st.Node, err)
	}
	defer s.delExport(context.WithoutCancel(ctx), exp)
	local, stop, err := s.workspace().Forward(ctx, sock)
	if err != nil {
		return false, err
	}
	defer stop()
	t, err := transport.DialURI(ctx, "nbd+unix:///"+exp+"?socket="+local, nil)
	if err != nil {
		return false, err
	}
	defer t.Close()
	m := &repo.Manifest{Meta: repo.Meta{Size: st.Size}, Tree: &repo.TreeRef{Root: st.Root, BlockSize: st.BlockSize}}
	if verified, err = backup.VerifyImage(ctx, nil, m, t, 0); err != nil {
		return false, fmt.Errorf("verify drive %s after finishing the commit: %w", st.Node, err)
	}
	return verified, nil
}

// finishOverlay ends the restore overlay bwro-SUFFIX: a commit job still
// there is completed; an overlay still active gets a new commit; then it
// is deleted. committed says whether the drive now holds the overlay's
// point.
func (s *Source) finishOverlay(ctx context.Context, node, suffix string) (committed bool, err error) {
	ov, job := "bwro-"+suffix, "bwjob-"+suffix
	if st, _, err := s.jobStatus(ctx, job); err == nil && st != "" {
		if err := s.finishCommit(ctx, job); err == nil {
			committed = true
		}
	}
	active, err := s.isActive(ctx, ov)
	if err != nil {
		return false, err
	}
	if active {
		again := fmt.Sprintf("bwjob-%d-c%s", s.pid, suffix)
		args := map[string]any{"job-id": again, "device": ov, "auto-dismiss": false}
		if node != "" {
			args["base-node"] = node
		}
		if err := s.c.Execute(ctx, "block-commit", args, nil); err != nil {
			return false, fmt.Errorf("commit the overlay %s left active: %w", ov, err)
		}
		if err := s.finishCommit(ctx, again); err != nil {
			return false, fmt.Errorf("commit the overlay %s left active: %w", ov, err)
		}
		committed = true
	}
	if err := s.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": ov}, nil); err != nil && !notFound(err) {
		return committed, err
	}
	return committed, nil
}

// isActive reports whether a node is a drive's active layer.
func (s *Source) isActive(ctx context.Context, node string) (bool, error) {
	blocks, err := s.queryBlock(ctx)
	if err != nil {
		return false, err
	}
	for _, b := range blocks {
		if b.Inserted != nil && b.Inserted.NodeName == node {
			return true, nil
		}
	}
	return false, nil
}

// recoverOrphans finishes the overlays of dead restores that left no
// state file here: the drive ends with the point or its old content as
// above, and the VM stays paused (whether it ran is unknown).
func (s *Source) recoverOrphans(ctx context.Context) error {
	var ns []nodeInfo
	if err := s.c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &ns); err != nil {
		return err
	}
	for _, n := range ns {
		suffix, dead := deadOwner(n.NodeName, "bwro-")
		if !dead {
			continue
		}
		base := baseOf(ns, n)
		if err := s.delExportsOf(ctx, "bw-"+suffix); err != nil {
			return err
		}
		if _, err := s.finishOverlay(ctx, base, suffix); err != nil {
			return err
		}
		if dir := filepath.Dir(n.Image.Filename); strings.HasPrefix(filepath.Base(dir), intoPrefix) {
			s.workspace().RemoveDir(dir)
		}
		s.recovered = append(s.recovered, fmt.Sprintf("the overlay %s of a killed restore was finished; its state file is not in %s, so the VM is left paused: resume it once checked", n.NodeName, s.stateDir()))
	}
	return nil
}

// baseOf is the format node of an overlay's backing image (the drive it
// was put over), "" if it has none.
func baseOf(ns []nodeInfo, ov nodeInfo) string {
	f := ov.Image.BackingImage.Filename
	for _, n := range ns {
		if f != "" && n.Image.Filename == f && n.Drv != "file" && n.NodeName != ov.NodeName && !strings.HasPrefix(n.NodeName, "#") {
			return n.NodeName
		}
	}
	return ""
}

// delExportsOf removes the exports named ID-*.
func (s *Source) delExportsOf(ctx context.Context, id string) error {
	var exports []struct {
		ID string `json:"id"`
	}
	if err := s.c.Execute(ctx, "query-block-exports", nil, &exports); err != nil {
		return err
	}
	for _, e := range exports {
		if strings.HasPrefix(e.ID, id+"-") {
			if err := s.delExport(ctx, e.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopIdleNBD stops QEMU's NBD server when it exports nothing (the killed
// restore's: the VM was paused, nobody else could start one since).
func (s *Source) stopIdleNBD(ctx context.Context) error {
	var exports []struct {
		ID string `json:"id"`
	}
	if err := s.c.Execute(ctx, "query-block-exports", nil, &exports); err != nil || len(exports) > 0 {
		return err
	}
	if err := s.c.Execute(ctx, "nbd-server-stop", nil, nil); err != nil && !notRunning(err) {
		return err
	}
	return nil
}

func (s *Source) resumeIfPaused(ctx context.Context) error {
	ctl := s.control()
	running, err := ctl.Running(ctx)
	if err != nil || running {
		return err
	}
	return ctl.Resume(ctx)
}

// Recovered says what Open did about killed restores into this VM.
func (s *Source) Recovered() []string { return s.recovered }

// key names the VM in restore state files: Options.Key, else the QMP
// socket's absolute path.
func (s *Source) key() string {
	if s.o.Key != "" {
		return s.o.Key
	}
	abs, err := filepath.Abs(s.o.Socket)
	if err != nil {
		return s.o.Socket
	}
	return abs
}

// stateDir holds the restore state files: Options.StateDir, else the
// scratch directory.
func (s *Source) stateDir() string {
	if s.o.StateDir != "" {
		return s.o.StateDir
	}
	return s.o.Scratch
}

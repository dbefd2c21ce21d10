package recovery

// The CLI's own recovery (recover --overlay): the command serves the
// point itself and runs the copy here, the same backup.Recover as the
// host's job (R1–R4, docs/overlay.md), with its progress in
// recover.progress for `recover --status` instead of a job.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/transport"
)

// ErrOverlayTaken: the overlay directory holds a recovery the request
// does not continue (no resume, or another target disk).
var ErrOverlayTaken = errors.New("recovery: the overlay directory holds another recovery")

// CheckOverlay checks a request against the overlay directory dir: the
// state to resume, or nil for a new recovery (dir new, or the overlay of
// a serve-point --writable whose writes carry on).
func CheckOverlay(dir, toDisk string, resume bool) (*backup.RecoverState, error) {
	st, err := backup.LoadRecoverState(dir)
	switch {
	case errors.Is(err, backup.ErrNoRecovery) && resume:
		return nil, err
	case errors.Is(err, backup.ErrNoRecovery):
		return nil, nil
	case err != nil:
		return nil, err
	case !resume:
		return nil, fmt.Errorf("%w: --overlay %s holds a recovery to disk %s (%s): add --resume to continue it", ErrOverlayTaken, dir, st.Disk, st.Phase)
	case st.Disk != toDisk:
		return nil, fmt.Errorf("%w: --overlay %s recovers to disk %s, not %s", ErrOverlayTaken, dir, st.Disk, toDisk)
	}
	return st, nil
}

// OpenTarget creates the disk name of size bytes on the host of env
// (a resumed recovery finds it made: with resume an existing disk is
// taken) and opens it through the first transport of order that works;
// rep says which.
func OpenTarget(ctx context.Context, env transport.Env, order, name string, size int64, resume bool) (t transport.Target, rep transport.Report, err error) {
	_, err = env.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: name, Size: size})
	if resume && errors.Is(err, client.ErrExists) {
		err = nil
	}
	if err != nil {
		return nil, rep, fmt.Errorf("create disk %s: %w", name, err)
	}
	t, rep, err = transport.OpenTarget(ctx, order, env, name)
	if err != nil {
		return nil, rep, err
	}
	if t.Size() < size {
		t.Close()
		return nil, rep, fmt.Errorf("disk %s has %d bytes, the point %d: %w", name, t.Size(), size, client.ErrInvalidRequest)
	}
	return t, rep, nil
}

// CopyOptions is a copy run by the CLI (recover --overlay).
type CopyOptions struct {
	Export *backup.WritableExport
	Target transport.Target
	// Dir is the overlay directory: recover.progress is written there.
	Dir         string
	Point, Disk string
	Size        int64
	Workers     int
	RateMiB     float64
	Checkpoint  time.Duration
	Log         *slog.Logger
	Out         io.Writer // the switch's summary and a failure are printed here
}

// Copy copies the point into the new disk and switches (backup.Recover),
// reporting progress to recover.progress and the log. switched says
// whether the export switched (the overlay is then deleted). A failure
// before the switch is returned, logged and printed, and the export keeps
// serving from the overlay, which is kept; ctx ending returns nil
// (interrupted: a resume continues).
func Copy(ctx context.Context, o CopyOptions) (switched bool, err error) {
	start, last := time.Now(), time.Time{}
	rep := backup.RecoverProgress{Point: o.Point, Disk: o.Disk, Phase: backup.PhaseCopying, Total: o.Size, PID: os.Getpid()}
	report := func() {
		rep.Updated = time.Now().UTC()
		if err := backup.SaveRecoverProgress(o.Dir, rep); err != nil {
			o.Log.Warn("recover progress report", "err", err)
		}
	}
	report()
	progress := func(done, total int64) {
		if time.Since(last) < 2*time.Second && done < total {
			return
		}
		last = time.Now()
		rate := float64(done) / max(time.Since(start).Seconds(), 1e-3)
		eta := time.Duration(float64(total-done) / max(rate, 1) * float64(time.Second)).Round(time.Second)
		rep.Done, rep.RateBps, rep.ETA = done, int64(rate), eta.Seconds()
		report()
		o.Log.Info("recover progress", "done", done, "total", total, "percent", 100*done/max(total, 1), "rate_mib_s", int(rate/(1<<20)), "eta", eta)
	}
	res, err := backup.Recover(ctx, backup.RecoverOptions{Export: o.Export, Target: o.Target, Workers: o.Workers, Progress: progress,
		Rate: int64(o.RateMiB * (1 << 20)), Checkpoint: o.Checkpoint})
	if err != nil && !o.Export.Switched() {
		if ctx.Err() != nil {
			return false, nil
		}
		rep.Phase, rep.Error = backup.PhaseStopped, err.Error()
		report()
		o.Log.Error("recover stopped; still serving from the overlay, which is kept: stop and run recover --resume to continue", "err", err)
		fmt.Fprintf(o.Out, "recover stopped: %v\n", err)
		return false, err
	}
	rep.Phase, rep.Done, rep.ETA, rep.Finished = backup.PhaseSwitched, rep.Total, 0, true
	report()
	if err != nil {
		o.Log.Error("switched to the new disk, but the overlay's files are left", "err", err)
	}
	fmt.Fprintf(o.Out, "switched to disk %s: %d chunks copied, %d resumed as copied, %d copied again after guest writes (%d passes), %s; overlay deleted\n",
		o.Disk, res.Copied, res.Resumed, res.Rewritten, res.Passes, res.Duration.Round(time.Millisecond))
	return true, nil
}

// SwitchedExport is the export of a recovery that had switched, resumed:
// everything from the new disk (opened by open); what is left of the
// overlay in dir is deleted. close releases the directory and the disk.
func SwitchedExport(dir string, base *backup.PointExport, open func() (transport.Target, error)) (w *backup.WritableExport, close func(), err error) {
	lock, err := overlay.LockDir(dir)
	if err != nil {
		return nil, nil, err
	}
	target, err := open()
	if err != nil {
		lock.Close()
		return nil, nil, err
	}
	if err := overlay.RemoveFiles(dir); err != nil {
		target.Close()
		lock.Close()
		return nil, nil, err
	}
	return backup.NewSwitchedExport(base, target), func() { target.Close(); lock.Close() }, nil
}

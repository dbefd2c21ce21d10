package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/transport"
)

type recoverOptions struct {
	servePointOptions
	transportOptions
	ToDisk  string
	Policy  string
	Resume  bool
	Status  bool
	List    bool
	Workers int
	RateMB  float64
	Wait    bool
	// Checkpoint is how often the copied chunks are recorded for --resume.
	Checkpoint time.Duration
}

var recoverOpts recoverOptions

var recoverCmd = &cobra.Command{
	Use:   "recover ID|latest --to-disk NAME [--overlay DIR]",
	Short: "Instant recovery: serve a restore point read-write at once, copy it into a new disk in the background, then switch the export over to that disk",
	Long: `Instant recovery. The restore point is served read-write over NBD at once
(as serve-point --writable: the guest's writes go to the overlay in DIR,
synced on every FLUSH), so a VM boots from it straight away (attach it with
the printed -drive or virsh line); DIR may hold the overlay of an earlier
serve-point --writable of the same point, whose writes carry on. Meanwhile every chunk is copied into a
new disk NAME created on the host (--host), with the overlay's blocks
merged in; chunks the guest writes after their copy are copied again.
Once the disk holds everything, I/O pauses for a moment, the last chunks
move, the disk is flushed, and the export switches over to it on the same
NBD connections: the client does not reconnect. The overlay is deleted only
then. Keep the command running while the VM uses the export.

If the repository or the host fails, the copy stops, the export keeps
serving from the overlay, and the overlay is kept. Stop blockwise and run
the same command with --resume to continue (chunks recorded as copied are
skipped); a kill -9 loses nothing the guest had flushed. With
file.reconnect-delay QEMU waits for the restarted export.

Without --overlay the host (--host, serve --points-repo) runs the
recovery as a job (POST /v1/recoveries): its overlay and NBD socket live
under its datastore (recoveries/NAME, NAME.sock), its progress and ETA are
the job's (blockwise job show), blockwise job cancel stops it (before the
switch the overlay is kept), and after a host restart or kill -9 the job
shows interrupted and recover --to-disk NAME --resume continues it. With
--wait the command follows the job until the switch. The host may be
remote (--host https://HOST:PORT --token T --ca CA.pem): the point comes
from the repository of --policy NAME, opened with the credentials the
host keeps for that policy, or else from the host's serve --points-repo;
no password is sent with the request (--repo and --password-file are
for --overlay only). The VM attaches to the host's unix socket, so it
runs on the host.`,
	Args: cobra.MaximumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 && recoverOpts.Resume && recoverOpts.Overlay == "" {
			args = []string{""} // the host knows the point of the recovery it resumes
		}
		if recoverOpts.Status {
			return runRecoverStatus(globals, recoverOpts, cmd.OutOrStdout())
		}
		if recoverOpts.List {
			return runRecoverList(cmd.Context(), globals, cmd.OutOrStdout())
		}
		if len(args) != 1 {
			return usageErrorf("recover needs the restore point (ID or latest)")
		}
		return runRecover(cmd.Context(), globals, recoverOpts, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
	},
}

func init() {
	addRepoFlags(recoverCmd, &recoverOpts.repoOptions)
	f := recoverCmd.Flags()
	f.StringVar(&recoverOpts.Disk, "disk", "", "with latest: the disk whose newest restore point to recover")
	f.StringVar(&recoverOpts.ToDisk, "to-disk", "", "the disk to create on the host and recover into")
	f.StringVar(&recoverOpts.Policy, "policy", "", "without --overlay: the point is in this protection policy's repository (the host holds its credentials; default the host's --points-repo)")
	f.StringVar(&recoverOpts.Overlay, "overlay", "", "directory of the overlay that keeps the guest's writes until the switch")
	f.BoolVar(&recoverOpts.Resume, "resume", false, "continue the recovery recorded in --overlay (after a failure or a kill)")
	f.BoolVar(&recoverOpts.List, "list", false, "list the host's recoveries (running or resumable) and exit")
	f.BoolVar(&recoverOpts.Status, "status", false, "print the progress and ETA of the recovery in --overlay (no ID needed) and exit")
	f.IntVar(&recoverOpts.Workers, "workers", 4, "concurrent chunk copies")
	f.DurationVar(&recoverOpts.Checkpoint, "checkpoint", 2*time.Second, "how often the chunks copied so far are recorded (after a flush of the disk), so --resume skips them")
	f.BoolVar(&recoverOpts.Wait, "wait", false, "without --overlay: follow the host's job until the switch (or its end)")
	f.Float64Var(&recoverOpts.RateMB, "rate-mb", 0, "bound the copy to this many MiB/s, leaving bandwidth to the running VM (0: no bound)")
	addPointServeFlags(f, &recoverOpts.servePointOptions)
	addTransportFlags(f, &recoverOpts.transportOptions)
	rootCmd.AddCommand(recoverCmd)
}

func runRecover(ctx context.Context, g globalOptions, o recoverOptions, ref string, out, errOut io.Writer) error {
	if o.ToDisk == "" {
		return usageErrorf("recover needs --to-disk NAME")
	}
	if o.Overlay == "" {
		return runHostRecover(ctx, g, o, ref, out)
	}
	if o.Policy != "" {
		return usageErrorf("--policy goes without --overlay: the host opens the policy's repository (with --overlay, --repo names it)")
	}
	st, err := o.recoverState()
	if err != nil {
		return err
	}
	sp, err := openServedPoint(ctx, o.servePointOptions, ref, errOut)
	if err != nil {
		return err
	}
	defer sp.close()
	if st != nil && st.Point != sp.m.ID.String() {
		return usageErrorf("--overlay %s recovers point %s, not %s", o.Overlay, st.Point, sp.m.ID.Short())
	}
	if st != nil && st.Phase == backup.PhaseSwitched {
		return resumeSwitched(ctx, g, o, sp, out)
	}
	w, err := sp.writable(o.Overlay)
	if err != nil {
		return err
	}
	if st == nil {
		if err := backup.SaveRecoverState(o.Overlay, backup.RecoverState{Point: sp.m.ID.String(), Disk: o.ToDisk, Phase: backup.PhaseCopying}); err != nil {
			return err
		}
	}
	target, err := o.openRecoverTarget(ctx, g, int64(sp.m.Size), out)
	if err != nil {
		if st == nil { // nothing was copied: no recovery to resume
			err = errors.Join(err, backup.RemoveRecoverState(o.Overlay))
		}
		return err
	}
	defer target.Close()
	var failed error
	work := func(ctx context.Context) {
		failed = recoverInBackground(ctx, o, sp, w, target, out)
	}
	return errors.Join(sp.serve(ctx, o.servePointOptions, backup.WritableExporter{Export: w}, out, work), failed)
}

// recoverState checks --resume against the overlay directory: the state
// to resume, or nil for a new recovery.
func (o recoverOptions) recoverState() (*backup.RecoverState, error) {
	st, err := backup.LoadRecoverState(o.Overlay)
	switch {
	case errors.Is(err, backup.ErrNoRecovery) && o.Resume:
		return nil, err
	case errors.Is(err, backup.ErrNoRecovery):
		return nil, nil // a new overlay, or a serve-point --writable's to carry on from
	case err != nil:
		return nil, err
	case !o.Resume:
		return nil, usageErrorf("--overlay %s holds a recovery to disk %s (%s): add --resume to continue it", o.Overlay, st.Disk, st.Phase)
	case st.Disk != o.ToDisk:
		return nil, usageErrorf("--overlay %s recovers to disk %s, not %s", o.Overlay, st.Disk, o.ToDisk)
	}
	return st, nil
}

// openRecoverTarget creates the disk (unless a resumed recovery created
// it already) and opens it through the first transport that works.
func (o recoverOptions) openRecoverTarget(ctx context.Context, g globalOptions, size int64, out io.Writer) (transport.Target, error) {
	env, err := o.transportOptions.env(g)
	if err != nil {
		return nil, err
	}
	_, err = env.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: o.ToDisk, Size: size})
	if o.Resume && errors.Is(err, client.ErrExists) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("create disk %s: %w", o.ToDisk, err)
	}
	t, rep, err := transport.OpenTarget(ctx, o.Order, env, o.ToDisk)
	if err != nil {
		return nil, err
	}
	if t.Size() < size {
		t.Close()
		return nil, fmt.Errorf("disk %s has %d bytes, the point %d: %w", o.ToDisk, t.Size(), size, client.ErrInvalidRequest)
	}
	fmt.Fprintf(out, "recovering into disk %s: %s\n", o.ToDisk, rep)
	return t, nil
}

// recoverInBackground runs the copy and the switch; a failure is logged
// and printed, and the export keeps serving from the overlay.
func recoverInBackground(ctx context.Context, o recoverOptions, sp *servedPoint, w *backup.WritableExport, target transport.Target, out io.Writer) error {
	start, last := time.Now(), time.Time{}
	rep := backup.RecoverProgress{Point: sp.m.ID.String(), Disk: o.ToDisk, Phase: backup.PhaseCopying, Total: int64(sp.m.Size), PID: os.Getpid()}
	report := func() {
		rep.Updated = time.Now().UTC()
		if err := backup.SaveRecoverProgress(o.Overlay, rep); err != nil {
			sp.log.Warn("recover progress report", "err", err)
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
		sp.log.Info("recover progress", "done", done, "total", total, "percent", 100*done/max(total, 1), "rate_mib_s", int(rate/(1<<20)), "eta", eta)
	}
	res, err := backup.Recover(ctx, backup.RecoverOptions{Export: w, Target: target, Workers: o.Workers, Progress: progress,
		Rate: int64(o.RateMB * (1 << 20)), Checkpoint: o.Checkpoint})
	if err != nil && !w.Switched() {
		if ctx.Err() != nil {
			return nil // interrupted: --resume continues
		}
		rep.Phase, rep.Error = backup.PhaseStopped, err.Error()
		report()
		sp.log.Error("recover stopped; still serving from the overlay, which is kept: stop and run recover --resume to continue", "err", err)
		fmt.Fprintf(out, "recover stopped: %v\n", err)
		return err
	}
	rep.Phase, rep.Done, rep.ETA, rep.Finished = backup.PhaseSwitched, rep.Total, 0, true
	report()
	sp.ov = nil // Recover deleted it
	if err != nil {
		sp.log.Error("switched to the new disk, but the overlay's files are left", "err", err)
	}
	fmt.Fprintf(out, "switched to disk %s: %d chunks copied, %d resumed as copied, %d copied again after guest writes (%d passes), %s; overlay deleted\n",
		o.ToDisk, res.Copied, res.Resumed, res.Rewritten, res.Passes, res.Duration.Round(time.Millisecond))
	return nil
}

// resumeSwitched serves a recovery that had switched: everything from the
// new disk; what is left of the overlay is deleted.
func resumeSwitched(ctx context.Context, g globalOptions, o recoverOptions, sp *servedPoint, out io.Writer) error {
	lock, err := overlay.LockDir(o.Overlay)
	if err != nil {
		return err
	}
	defer lock.Close()
	target, err := o.openRecoverTarget(ctx, g, int64(sp.m.Size), out)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := overlay.RemoveFiles(o.Overlay); err != nil {
		return err
	}
	fmt.Fprintf(out, "switched to disk %s already: serving it\n", o.ToDisk)
	w := backup.NewSwitchedExport(sp.exp, target)
	return sp.serve(ctx, o.servePointOptions, backup.WritableExporter{Export: w}, out, nil)
}

// runRecoverStatus prints the last progress report of the recovery in
// --overlay: phase, bytes, rate and ETA (the job's state, for scripts
// with --json).
func runRecoverStatus(g globalOptions, o recoverOptions, out io.Writer) error {
	if o.Overlay == "" {
		return usageErrorf("--status needs --overlay DIR")
	}
	p, err := backup.LoadRecoverProgress(o.Overlay)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, p)
	}
	fmt.Fprintf(out, "recovery of %s to disk %s: %s, %s of %s (%d%%), %s/s, ETA %s, updated %s by pid %d\n",
		p.Point[:min(12, len(p.Point))], p.Disk, p.Phase, human(p.Done), human(p.Total), 100*p.Done/max(p.Total, 1),
		human(p.RateBps), time.Duration(p.ETA*float64(time.Second)), p.Updated.Format(time.RFC3339), p.PID)
	if p.Error != "" {
		fmt.Fprintf(out, "error: %s\n", p.Error)
	}
	return nil
}

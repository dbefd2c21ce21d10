package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/recovery"
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
	st, err := recovery.CheckOverlay(o.Overlay, o.ToDisk, o.Resume)
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
		var switched bool
		switched, failed = recovery.Copy(ctx, recovery.CopyOptions{Export: w, Target: target, Dir: o.Overlay,
			Point: sp.m.ID.String(), Disk: o.ToDisk, Size: int64(sp.m.Size), Workers: o.Workers, RateMiB: o.RateMB,
			Checkpoint: o.Checkpoint, Log: sp.log, Out: out})
		if switched {
			sp.ov = nil // Recover deleted it
		}
	}
	return errors.Join(sp.serve(ctx, o.servePointOptions, backup.WritableExporter{Export: w}, out, work), failed)
}

// openRecoverTarget creates the disk (unless a resumed recovery created
// it already) and opens it through the first transport that works.
func (o recoverOptions) openRecoverTarget(ctx context.Context, g globalOptions, size int64, out io.Writer) (transport.Target, error) {
	env, err := o.transportOptions.env(g)
	if err != nil {
		return nil, err
	}
	t, rep, err := recovery.OpenTarget(ctx, env, o.Order, o.ToDisk, size, o.Resume)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "recovering into disk %s: %s\n", o.ToDisk, rep)
	return t, nil
}

// resumeSwitched serves a recovery that had switched: everything from the
// new disk; what is left of the overlay is deleted.
func resumeSwitched(ctx context.Context, g globalOptions, o recoverOptions, sp *servedPoint, out io.Writer) error {
	w, done, err := recovery.SwitchedExport(o.Overlay, sp.exp, func() (transport.Target, error) {
		return o.openRecoverTarget(ctx, g, int64(sp.m.Size), out)
	})
	if err != nil {
		return err
	}
	defer done()
	fmt.Fprintf(out, "switched to disk %s already: serving it\n", o.ToDisk)
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

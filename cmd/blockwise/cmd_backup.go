package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

type backupOptions struct {
	repoOptions
	transportOptions
	Full        bool
	NoProve     bool
	LeaseTTL    time.Duration
	Workers     int
	MetricsFile string
	// Parallel is how many disks are backed up at once (Veeam's
	// "parallel processing"), into the one repository this command opened.
	Parallel int
	sourceOptions
}

var backupOpts backupOptions

var backupCmd = &cobra.Command{
	Use:   "backup DISK|qemu+unix:///PATH/qmp.sock[?drive=A,B&agent=PATH&name=VM]|libvirt:///system?domain=NAME[&disk=vda&socket=PATH]|qemu+ssh://[USER@]HOST[:PORT]/system?domain=NAME[&keyfile=PATH&known_hosts=PATH]...",
	Short: "Back up disks: snapshot, read what CBT says changed (san, hot-add or NBD), store, delete the snapshot",
	Args:  cobra.MinimumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runBackups(cmd.Context(), globals, backupOpts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	},
}

func init() {
	addRepoFlags(backupCmd, &backupOpts.repoOptions)
	addCompressionFlag(backupCmd, &backupOpts.repoOptions)
	backupCmd.Flags().BoolVar(&backupOpts.Full, "full", false, "read every allocated area, ignoring the last restore point's change ID")
	backupCmd.Flags().BoolVar(&backupOpts.NoProve, "no-prove", false,
		"keep no hash tree: the point gets no root and is not proven against the host's, nor are the incrementals after it until a --full one (to measure what the proof costs)")
	backupCmd.Flags().DurationVar(&backupOpts.LeaseTTL, "lease-ttl", backup.DefaultLeaseTTL,
		"how long the disk's backup lease on the host outlives this process if it dies without releasing it (one backup of a disk at a time; a holder killed on this machine is taken over at once)")
	backupCmd.Flags().IntVar(&backupOpts.Workers, "workers", 4, "concurrent reads")
	backupCmd.Flags().IntVar(&backupOpts.Parallel, "parallel", 1, "back up this many of the disks at once (progress bars off when more than one)")
	backupCmd.Flags().StringVar(&backupOpts.MetricsFile, "metrics-file", "", "write each disk's outcome as Prometheus metrics to this file (for node_exporter's textfile collector), atomically")
	addTransportFlags(backupCmd.Flags(), &backupOpts.transportOptions)
	addSourceFlags(backupCmd.Flags(), &backupOpts.sourceOptions)
	rootCmd.AddCommand(backupCmd)
}

// backupSummary is what --json prints per disk.
type backupSummary = backup.Summary

// runBackups backs up the disks and, with --metrics-file, records each
// one's outcome, the disks it never got to as failed.
func runBackups(ctx context.Context, g globalOptions, o backupOptions, disks []string, out, errOut io.Writer) error {
	outs, err := backupDisks(ctx, g, o, disks, out, errOut)
	if o.MetricsFile != "" {
		tried := map[string]bool{}
		for _, o := range outs {
			tried[o.disk] = true
		}
		for _, d := range disks { // never tried: the repository or host failed first
			if !tried[d] && !sources.IsURI(d) {
				outs = append(outs, backupOutcome{disk: d, at: time.Now()})
			}
		}
		if merr := writeBackupMetrics(o.MetricsFile, outs); merr != nil {
			err = errors.Join(err, fmt.Errorf("--metrics-file: %w", merr))
		}
	}
	return err
}

// backupDisks backs up the hypervisor sources in turn, then the host's
// disks, --parallel of them at once; one failing does not stop the
// others, and the command fails if any did.
func backupDisks(ctx context.Context, g globalOptions, o backupOptions, disks []string, out, errOut io.Writer) ([]backupOutcome, error) {
	hostDisks, uris, err := sources.Split(disks)
	if err != nil {
		return nil, err
	}
	r, err := o.open(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var outs []backupOutcome
	var errs []error
	for _, src := range uris {
		o, err := backupSource(ctx, g, o, r, src, out, errOut)
		outs, errs = append(outs, o...), append(errs, err)
		if ctx.Err() != nil {
			return outs, errors.Join(errs...)
		}
	}
	if len(hostDisks) == 0 {
		return outs, errors.Join(errs...)
	}
	env, err := o.transportOptions.env(g)
	if err != nil {
		return outs, errors.Join(append(errs, err)...)
	}
	hostOuts, err := backupHostDisks(ctx, g, o, r, env, hostDisks, out, errOut)
	return append(outs, hostOuts...), errors.Join(append(errs, err)...)
}

// backupHostDisks backs up the host's disks, o.Parallel at a time.
func backupHostDisks(ctx context.Context, g globalOptions, o backupOptions, r *repo.Repository, env transport.Env, disks []string, out, errOut io.Writer) ([]backupOutcome, error) {
	h := backup.ClientHost{C: env.Client}
	if _, err := sources.HostQuiesce(o.sourceOptions.options(nil), ""); err != nil {
		return nil, err // a bad --quiesce is a usage error before any disk
	}
	outs := make([]backupOutcome, len(disks))
	errs := make([]error, len(disks))
	var mu sync.Mutex // printing
	one := func(i int) {
		disk := disks[i]
		bar := newProgress(errOut, disk)
		if o.Parallel > 1 {
			bar.on = false // interleaved bars are noise
		}
		var rep transport.Report
		open := transport.Opener(o.Order, env, func(r transport.Report) { rep = r })
		q, err := sources.DiskQuiesce(ctx, env.Client, disk, o.Agent, o.sourceOptions.options(nil))
		if err != nil {
			bar.finish()
			outs[i], errs[i] = backupOutcome{disk: disk, at: time.Now()}, err
			return
		}
		res, err := backup.Run(ctx, backup.Options{Disk: disk, Host: h, Repo: r, Open: open, Workers: o.Workers, Full: o.Full, NoProve: o.NoProve, LeaseTTL: o.LeaseTTL, Progress: bar.update, Quiesce: q})
		bar.finish()
		outs[i] = backupOutcome{disk: disk, res: res, at: time.Now()}
		if err == nil {
			mu.Lock()
			err = printBackup(g, disk, res, rep, r.OpenTimes(), out)
			mu.Unlock()
		}
		errs[i] = err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, o.Parallel))
	tried := 0
	for i := range disks {
		if ctx.Err() != nil {
			break // interrupted: the rest are never tried
		}
		sem <- struct{}{}
		tried++
		wg.Add(1)
		go func() { defer func() { <-sem; wg.Done() }(); one(i) }()
	}
	wg.Wait()
	return outs[:tried], errors.Join(errs...)
}

func printBackup(g globalOptions, disk string, res *backup.Result, rep transport.Report, ot repo.OpenTimes, out io.Writer) error {
	s := backup.Summarize(disk, res, rep.String(), ot)
	var steps []string
	for _, p := range res.Phases {
		steps = append(steps, fmt.Sprintf("%s %s", p.Name, p.Duration.Round(time.Millisecond)))
	}
	if g.JSON {
		return json.NewEncoder(out).Encode(s)
	}
	fmt.Fprintf(out, "backup %s of %s: %s", short(s.ID), disk, s.Mode)
	if s.Reason != "" {
		fmt.Fprintf(out, " (%s)", s.Reason)
	}
	if s.Lost > 0 {
		fmt.Fprintf(out, "\n  re-read %.1f MiB the repository had lost (the parent's packs there are gone)", float64(s.Lost)/(1<<20))
	}
	if s.Consistency != "" {
		fmt.Fprintf(out, "\n  consistency %s: %s", s.Consistency, s.ConsistencyReason)
	}
	fmt.Fprintf(out, "\n  changed %d bytes, read %d, new %d, stored %d, %.2fs, change ID %s\n", s.Changed, s.Read, s.NewBytes, s.Stored, s.Seconds, s.ChangeID)
	fmt.Fprintf(out, "  %s\n", rootLine(s))
	fmt.Fprintf(out, "  %s\n  steps: %s (opening the repository: unlock %s, index %s)\n", rep, strings.Join(steps, ", "),
		ot.Unlock.Round(time.Millisecond), ot.Index.Round(time.Millisecond))
	return nil
}

// rootLine tells the point's root and whether the host proved it.
func rootLine(s backup.Summary) string {
	switch {
	case s.Root == "":
		return "no root: " + s.RootNote
	case s.RootProven && s.RootNote != "":
		return "root " + s.Root + " proven: equal to the host's (" + s.RootNote + ")"
	case s.RootProven:
		return "root " + s.Root + " proven: equal to the host's"
	}
	return "root " + s.Root + " (" + s.RootNote + ")"
}

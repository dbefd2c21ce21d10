package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
)

type forgetOptions struct {
	repoOptions
	backup.Policy
	Disk   string
	Prune  bool
	DryRun bool
}

var forgetOpts forgetOptions

var forgetCmd = &cobra.Command{
	Use:   "forget [ID...]",
	Short: "Remove restore points by ID or by a --keep-* policy (data goes with prune)",
	RunE: func(cmd *cobra.Command, args []string) error {
		return runForget(cmd.Context(), forgetOpts, args, cmd.OutOrStdout())
	},
}

type pruneOptions struct {
	repoOptions
	DryRun bool
}

var pruneOpts pruneOptions

var pruneCmd = &cobra.Command{
	Use:   "prune",
	Short: "Delete data no restore point references (mark and sweep under an exclusive lock)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runPrune(cmd.Context(), pruneOpts, cmd.OutOrStdout())
	},
}

func init() {
	addRepoFlags(forgetCmd, &forgetOpts.repoOptions)
	f := forgetCmd.Flags()
	f.IntVar(&forgetOpts.Last, "keep-last", 0, "keep the newest N restore points")
	f.IntVar(&forgetOpts.Hourly, "keep-hourly", 0, "keep the newest point of each of the last N hours")
	f.IntVar(&forgetOpts.Daily, "keep-daily", 0, "... days")
	f.IntVar(&forgetOpts.Weekly, "keep-weekly", 0, "... weeks")
	f.IntVar(&forgetOpts.Monthly, "keep-monthly", 0, "... months")
	f.IntVar(&forgetOpts.Yearly, "keep-yearly", 0, "... years")
	f.Var(&forgetOpts.Within, "keep-within", "keep every point taken within this span before the disk's newest one (e.g. 7d, 1y6m, 2d12h)")
	f.StringVar(&forgetOpts.Disk, "disk", "", "only this disk's restore points")
	f.BoolVar(&forgetOpts.Prune, "prune", false, "prune afterwards")
	f.BoolVarP(&forgetOpts.DryRun, "dry-run", "n", false, "only say what would be removed")
	addRepoFlags(pruneCmd, &pruneOpts.repoOptions)
	addCompressionFlag(pruneCmd, &pruneOpts.repoOptions)
	pruneCmd.Flags().BoolVarP(&pruneOpts.DryRun, "dry-run", "n", false, "only say what would be removed and repacked")
	rootCmd.AddCommand(forgetCmd, pruneCmd)
}

func runForget(ctx context.Context, o forgetOptions, ids []string, out io.Writer) error {
	if (len(ids) == 0) == o.Policy.Empty() {
		return usageErrorf("give restore point IDs or a --keep-* policy, not both")
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	drop, err := forgetList(ctx, r, o, ids, out)
	if err != nil {
		return err
	}
	for _, m := range drop {
		if o.DryRun {
			fmt.Fprintf(out, "would forget %s (%s, %s)\n", m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"))
			continue
		}
		if err := r.Forget(ctx, m.ID); err != nil {
			return err
		}
		fmt.Fprintf(out, "forgot %s (%s, %s)\n", m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"))
	}
	if o.Prune && !o.DryRun {
		return prune(ctx, r, false, out)
	}
	return nil
}

// forgetList resolves IDs, or applies the policy and reports what it keeps.
func forgetList(ctx context.Context, r *repo.Repository, o forgetOptions, ids []string, out io.Writer) ([]*repo.Manifest, error) {
	var drop []*repo.Manifest
	for _, ref := range ids {
		m, err := backup.FindPoint(ctx, r, ref, o.Disk)
		if err != nil {
			return nil, err
		}
		drop = append(drop, m)
	}
	if len(ids) > 0 {
		return drop, nil
	}
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return nil, err
	}
	var mine []*repo.Manifest
	for _, m := range ms {
		if o.Disk == "" || m.Disk == o.Disk {
			mine = append(mine, m)
		}
	}
	for _, d := range o.Policy.Apply(mine) {
		if d.Keep {
			fmt.Fprintf(out, "keep   %s (%s, %s): %s\n", d.Manifest.ID.Short(), d.Manifest.Disk, d.Manifest.Time.Format("2006-01-02 15:04:05"), strings.Join(d.Reasons, ", "))
		} else {
			drop = append(drop, d.Manifest)
		}
	}
	return drop, nil
}

func runPrune(ctx context.Context, o pruneOptions, out io.Writer) error {
	r, err := o.openUnindexed(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	return prune(ctx, r, o.DryRun, out)
}

func prune(ctx context.Context, r *repo.Repository, dryRun bool, out io.Writer) error {
	st, err := r.PruneWith(ctx, repo.PruneOptions{DryRun: dryRun})
	if err != nil {
		return err
	}
	if globals.JSON {
		return json.NewEncoder(out).Encode(st)
	}
	printWarnings(out, st.Warnings)
	if dryRun {
		fmt.Fprintf(out, "would remove %d packs (about %s), repack %d, keep %d\n", st.PacksRemoved, human(st.BytesRemoved), st.PacksRepacked, st.PacksKept)
		return nil
	}
	fmt.Fprintf(out, "removed %d packs (%s), repacked %d, kept %d\n", st.PacksRemoved, human(st.BytesRemoved), st.PacksRepacked, st.PacksKept)
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

var forgetOpts repoOptions

var forgetCmd = &cobra.Command{
	Use:   "forget ID...",
	Short: "Remove restore points (their data goes with the next prune)",
	Args:  cobra.MinimumNArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runForget(cmd.Context(), forgetOpts, args, cmd.OutOrStdout())
	},
}

var pruneOpts repoOptions

var pruneCmd = &cobra.Command{
	Use:   "prune",
	Short: "Delete data no restore point references",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runPrune(cmd.Context(), pruneOpts, cmd.OutOrStdout())
	},
}

func init() {
	addRepoFlags(forgetCmd, &forgetOpts)
	addRepoFlags(pruneCmd, &pruneOpts)
	rootCmd.AddCommand(forgetCmd, pruneCmd)
}

func runForget(ctx context.Context, o repoOptions, ids []string, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, ref := range ids {
		m, err := findManifest(ctx, r, ref, "")
		if err != nil {
			return err
		}
		if err := r.Forget(ctx, m.ID); err != nil {
			return err
		}
		fmt.Fprintf(out, "forgot %s (%s, %s)\n", m.ID.Short(), m.Disk, m.Time.Format("2006-01-02 15:04:05"))
	}
	return nil
}

func runPrune(ctx context.Context, o repoOptions, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	st, err := r.Prune(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %d packs (%d bytes), repacked %d, kept %d\n", st.PacksRemoved, st.BytesRemoved, st.PacksRepacked, st.PacksKept)
	return nil
}

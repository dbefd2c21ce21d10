package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

var statsOpts repoOptions

var statsCmd = &cobra.Command{
	Use:   "stats",
	Short: "Logical and stored size of the repository, dedup and compression ratios",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runStats(cmd.Context(), statsOpts, cmd.OutOrStdout())
	},
}

var checkCmd = &cobra.Command{
	Use:   "check",
	Short: "Verify the repository (alias of repo check)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoCheck(cmd.Context(), checkOpts, cmd.OutOrStdout())
	},
}

var checkOpts checkOptions

func init() {
	addRepoFlags(statsCmd, &statsOpts)
	addCheckFlags(checkCmd, &checkOpts)
	rootCmd.AddCommand(statsCmd, checkCmd)
}

// repoStats: logical bytes are the non-zero chunk bytes of every restore
// point; unique bytes those of distinct chunks; stored bytes the packs.
type repoStats struct {
	Points        int     `json:"points"`
	LogicalBytes  int64   `json:"logicalBytes"`
	UniqueBytes   int64   `json:"uniqueBytes"`
	StoredBytes   int64   `json:"storedBytes"`
	DedupRatio    float64 `json:"dedupRatio"`
	CompressRatio float64 `json:"compressionRatio"`
}

func runStats(ctx context.Context, o repoOptions, out io.Writer) error {
	r, err := o.openUnindexed(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	rs, err := r.Stats(ctx)
	if err != nil {
		return err
	}
	st := &repoStats{Points: rs.Points, LogicalBytes: rs.LogicalBytes, UniqueBytes: rs.UniqueBytes, StoredBytes: rs.StoredBytes}
	if st.UniqueBytes > 0 && st.StoredBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
		st.CompressRatio = float64(st.UniqueBytes) / float64(st.StoredBytes)
	}
	if globals.JSON {
		return json.NewEncoder(out).Encode(st)
	}
	fmt.Fprintf(out, "%d restore points\nlogical  %s (non-zero data of every point)\nunique   %s (distinct chunks)\nstored   %s (packs)\ndedup    %.2fx\ncompress %.2fx\n",
		st.Points, human(st.LogicalBytes), human(st.UniqueBytes), human(st.StoredBytes), st.DedupRatio, st.CompressRatio)
	return nil
}

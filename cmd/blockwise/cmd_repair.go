package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/repo"
)

var repairCmd = &cobra.Command{
	Use:   "repair",
	Short: "Repair a damaged repository",
}

type repairIndexOptions struct {
	repoOptions
	ReadAllPacks bool
}

var repairIndexOpts repairIndexOptions

var repairIndexCmd = &cobra.Command{
	Use:   "index",
	Short: "Rebuild the index from the packs (after an index file was lost or damaged)",
	Long: `Rebuild the index from the packs. Every pack names its blobs in a header
sealed at its end; repair index reads the headers of the packs that no
readable index file names (all packs with --read-all-packs), writes new
index files naming every readable pack, then removes the old ones. Packs
whose header cannot be read are listed and left alone.

Run it when check reports a damaged index file or blobs that no index file
names, or when prune refuses to run for that reason.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepairIndex(cmd.Context(), repairIndexOpts, cmd.OutOrStdout())
	},
}

func init() {
	addRepoFlags(repairIndexCmd, &repairIndexOpts.repoOptions)
	repairIndexCmd.Flags().BoolVar(&repairIndexOpts.ReadAllPacks, "read-all-packs", false, "read every pack's header instead of trusting readable index files")
	repairCmd.AddCommand(repairIndexCmd)
	rootCmd.AddCommand(repairCmd)
}

func runRepairIndex(ctx context.Context, o repairIndexOptions, out io.Writer) error {
	r, err := o.openNoIndex(ctx) // Open refuses a damaged index file
	if err != nil {
		return err
	}
	defer r.Close()
	res, err := r.RepairIndex(ctx, repo.RepairIndexOptions{ReadAllPacks: o.ReadAllPacks})
	if err != nil {
		return err
	}
	if globals.JSON {
		return json.NewEncoder(out).Encode(res)
	}
	printWarnings(out, res.Warnings)
	for _, n := range res.BadIndexFiles {
		fmt.Fprintf(out, "unreadable index file %s: replaced\n", n)
	}
	for _, p := range res.Damaged {
		fmt.Fprintf(out, "pack %s: header unreadable, not indexed\n", p)
	}
	fmt.Fprintf(out, "%d packs (%d headers read) with %d blobs indexed in %d new index files; %d old index files removed; %d packs named by old index files are missing\n",
		res.Packs, res.PacksRead, res.Blobs, res.NewIndexFiles, res.OldIndexFiles, res.Missing)
	return nil
}

package main

import (
	"context"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

type changesOptions struct {
	Snapshot string
	Since    string
}

var changesOpts changesOptions

var changesCmd = &cobra.Command{
	Use:   "changes DISK --snapshot S [--since CHANGEID]",
	Short: "List a snapshot's areas changed since a change ID (QueryChangedDiskAreas), all pages",
	Long: `List the areas of snapshot S written after CHANGEID. --since "*" (the
default) lists every allocated area, for a first full backup. Exit code 4
means the change ID is no longer valid: take a full backup.`,
	Args: args(1, 1),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runChanges(cmd.Context(), globals, changesOpts, a, cmd.OutOrStdout())
	},
}

func init() {
	f := changesCmd.Flags()
	f.StringVar(&changesOpts.Snapshot, "snapshot", "", "snapshot to query (required)")
	f.StringVar(&changesOpts.Since, "since", client.AllChanges, `change ID of the previous backup ("*": everything allocated)`)
	rootCmd.AddCommand(changesCmd)
}

// changesResult is the --json output: VMware's shape over the whole disk.
type changesResult struct {
	StartOffset int64         `json:"startOffset"`
	Length      int64         `json:"length"`
	ChangedArea []client.Area `json:"changedArea"`
}

func runChanges(ctx context.Context, g globalOptions, o changesOptions, a []string, out io.Writer) error {
	if o.Snapshot == "" {
		return usageErrorf("changes: --snapshot is required")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	s, err := c.Snapshot(ctx, a[0], o.Snapshot)
	if err != nil {
		return err
	}
	areas, err := c.AllChangedAreas(ctx, a[0], o.Snapshot, o.Since)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, changesResult{StartOffset: 0, Length: s.Size, ChangedArea: areas})
	}
	rows := make([][]string, 0, len(areas))
	for _, ar := range areas {
		rows = append(rows, []string{strconv.FormatInt(ar.Start, 10), strconv.FormatInt(ar.Length, 10)})
	}
	return table(out, "START\tLENGTH", rows)
}

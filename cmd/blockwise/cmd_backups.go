package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/repo"
)

var backupsOpts struct {
	repoOptions
	Disk string
}

var backupsCmd = &cobra.Command{
	Use:   "backups",
	Short: "List the restore points in a repository",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runBackups(cmd.Context(), backupsOpts.repoOptions, backupsOpts.Disk, cmd.OutOrStdout())
	},
}

func init() {
	addRepoFlags(backupsCmd, &backupsOpts.repoOptions)
	backupsCmd.Flags().StringVar(&backupsOpts.Disk, "disk", "", "only this disk's restore points")
	rootCmd.AddCommand(backupsCmd)
}

type backupRow struct {
	ID       string `json:"id"`
	Disk     string `json:"disk"`
	Time     string `json:"time"`
	Size     uint64 `json:"size"`
	ChangeID string `json:"changeId"`
	Parent   string `json:"parent,omitempty"`
	NewBytes uint64 `json:"newBytes"`
}

func runBackups(ctx context.Context, o repoOptions, disk string, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Time.Before(ms[j].Time) })
	rows := []backupRow{}
	for _, m := range ms {
		if disk == "" || m.Disk == disk {
			rows = append(rows, rowOf(m))
		}
	}
	if globals.JSON {
		return json.NewEncoder(out).Encode(rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDISK\tTIME\tSIZE\tNEW BYTES\tPARENT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.ID[:12], r.Disk, r.Time, r.Size, r.NewBytes, short(r.Parent))
	}
	return tw.Flush()
}

func rowOf(m *repo.Manifest) backupRow {
	row := backupRow{ID: m.ID.String(), Disk: m.Disk, Time: m.Time.Format("2006-01-02 15:04:05"),
		Size: m.Size, ChangeID: m.ChangeID, NewBytes: m.Stats.NewBytes}
	if m.Parent != nil {
		row.Parent = m.Parent.String()
	}
	return row
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

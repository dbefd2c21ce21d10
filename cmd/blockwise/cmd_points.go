package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/repo"
)

var pointsOpts struct {
	repoOptions
	Disk string
}

// pointsCmd was called "snapshots", which is easily taken for "snapshot"
// (the host's snapshots of a disk); the old name still works, with a
// deprecation note on stderr.
var pointsCmd = &cobra.Command{
	Use:     "points",
	Aliases: []string{"backups", deprecatedPointsName},
	Short:   "List the restore points in a repository (per disk: time, size, bytes changed, read and new, duration)",
	Args:    cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if cmd.CalledAs() == deprecatedPointsName {
			fmt.Fprintf(cmd.ErrOrStderr(), "Command %q is deprecated, use \"blockwise points\" (it lists restore points; \"blockwise snapshot\" manages a disk's snapshots)\n", deprecatedPointsName)
		}
		return runPoints(cmd.Context(), pointsOpts.repoOptions, pointsOpts.Disk, cmd.OutOrStdout())
	},
}

// deprecatedPointsName is the old name of "points".
const deprecatedPointsName = "snapshots"

func init() {
	addRepoFlags(pointsCmd, &pointsOpts.repoOptions)
	pointsCmd.Flags().StringVar(&pointsOpts.Disk, "disk", "", "only this disk's restore points")
	rootCmd.AddCommand(pointsCmd)
}

type backupRow struct {
	ID       string  `json:"id"`
	Disk     string  `json:"disk"`
	Time     string  `json:"time"`
	Size     uint64  `json:"size"`
	ChangeID string  `json:"changeId"`
	Parent   string  `json:"parent,omitempty"`
	Changed  uint64  `json:"changedBytes"`
	Read     uint64  `json:"readBytes"`
	NewBytes uint64  `json:"newBytes"`
	Seconds  float64 `json:"seconds"`
	// Consistency: "application" (quiesced), "crash", or "" (not
	// recorded: a host disk without quiescing, or an older point).
	Consistency       string `json:"consistency,omitempty"`
	ConsistencyReason string `json:"consistencyReason,omitempty"`
	// Root: hex of the point's hash-tree root, absent for a point
	// without one; RootProven: it equalled the host's at the backup.
	Root       string `json:"root,omitempty"`
	RootProven bool   `json:"rootProven"`
}

func runPoints(ctx context.Context, o repoOptions, disk string, out io.Writer) error {
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
	fmt.Fprintln(tw, "ID\tDISK\tTIME\tSIZE\tCHANGED\tREAD\tNEW\tDURATION\tCONSISTENCY\tROOT\tPARENT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID[:12], r.Disk, r.Time, human(int64(r.Size)), changedCell(r),
			human(int64(r.Read)), human(int64(r.NewBytes)), roughDuration(r.Seconds), cmp.Or(r.Consistency, "-"), rootCell(r), short(r.Parent))
	}
	return tw.Flush()
}

func rowOf(m *repo.Manifest) backupRow {
	row := backupRow{ID: m.ID.String(), Disk: m.Disk, Time: m.Time.Format("2006-01-02 15:04:05"),
		Size: m.Size, ChangeID: m.ChangeID, Changed: m.Changed, Read: m.Stats.BytesRead, NewBytes: m.Stats.NewBytes, Seconds: m.Stats.Duration.Seconds(),
		Consistency: m.Consistency, ConsistencyReason: m.ConsistencyReason}
	if m.Parent != nil {
		row.Parent = m.Parent.String()
	}
	if m.Tree != nil {
		row.Root, row.RootProven = m.Tree.Root, m.Tree.Proven
	}
	return row
}

// changedCell prints the bytes CBT reported changed; restore points
// written before they were recorded show "-" (nothing is read that CBT
// did not report, so bytes read without any changed mean an old point).
func changedCell(r backupRow) string {
	if r.Changed == 0 && r.Read > 0 {
		return "-"
	}
	return human(int64(r.Changed))
}

// roughDuration prints seconds to a tenth, or milliseconds below one.
func roughDuration(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// rootCell is the root's first 12 hex digits, "(unproven)" after it when
// the host could not prove it, "-" for a point without one.
func rootCell(r backupRow) string {
	switch {
	case r.Root == "":
		return "-"
	case r.RootProven:
		return short(r.Root)
	}
	return short(r.Root) + " (unproven)"
}

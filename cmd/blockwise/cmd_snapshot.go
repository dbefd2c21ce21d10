package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

type snapshotOptions struct {
	Description string
	NoWait      bool
}

var snapOpts snapshotOptions

var snapshotCmd = &cobra.Command{Use: "snapshot", Aliases: []string{"snap"}, Short: "Create, list and remove snapshots"}

func init() {
	create := &cobra.Command{
		Use: "create DISK [ID]", Short: "Take a snapshot; prints its ID and change ID", Args: args(1, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runSnapshotCreate(cmd.Context(), globals, snapOpts, a, cmd.OutOrStdout())
		},
	}
	create.Flags().StringVarP(&snapOpts.Description, "description", "d", "", "description")
	list := &cobra.Command{
		Use: "list DISK", Aliases: []string{"ls"}, Short: "List a disk's snapshots", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runSnapshotList(cmd.Context(), globals, a, cmd.OutOrStdout())
		},
	}
	show := &cobra.Command{
		Use: "show DISK SNAPSHOT", Short: "Describe a snapshot with its hash-tree root (waits while the host computes it)", Args: args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runSnapshotShow(cmd.Context(), globals, a, cmd.OutOrStdout())
		},
	}
	rm := &cobra.Command{
		Use: "rm DISK SNAPSHOT", Short: "Remove a snapshot; waits for its consolidation", Args: args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runSnapshotRm(cmd.Context(), globals, snapOpts, a, cmd.OutOrStdout())
		},
	}
	rm.Flags().BoolVar(&snapOpts.NoWait, "no-wait", false, "return once consolidation started; prints the task")
	snapshotCmd.AddCommand(create, list, show, rm)
	rootCmd.AddCommand(snapshotCmd)
}

func runSnapshotCreate(ctx context.Context, g globalOptions, o snapshotOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	id := ""
	if len(a) == 2 {
		id = a[1]
	}
	s, err := c.CreateSnapshot(ctx, a[0], id, o.Description)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, s)
	}
	return table(out, "ID\tCHANGE ID", [][]string{{s.ID, orDash(s.ChangeID)}})
}

func runSnapshotList(ctx context.Context, g globalOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	snaps, err := c.ListSnapshots(ctx, a[0])
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, snaps)
	}
	var rows [][]string
	for _, s := range snaps {
		rows = append(rows, snapshotRow(s))
	}
	return table(out, snapshotHeader, rows)
}

const snapshotHeader = "ID\tCREATED\tSIZE\tCHANGE ID\tROOT\tDESCRIPTION"

// snapshotRow is a snapshot's line; ROOT is "-" while the host computes it.
func snapshotRow(s client.Snapshot) []string {
	return []string{s.ID, s.Created.Local().Format("2006-01-02 15:04:05"), human(s.Size), orDash(s.ChangeID), orDash(s.Root), s.Description}
}

// runSnapshotShow waits for the snapshot's root (a disk without a tree
// shows "-").
func runSnapshotShow(ctx context.Context, g globalOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	if _, err := c.SnapshotRoot(ctx, a[0], a[1]); err != nil && !errors.Is(err, client.ErrNoTree) {
		return err
	}
	s, err := c.Snapshot(ctx, a[0], a[1])
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, s)
	}
	return table(out, snapshotHeader, [][]string{snapshotRow(*s)})
}

func runSnapshotRm(ctx context.Context, g globalOptions, o snapshotOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	t, err := c.DeleteSnapshot(ctx, a[0], a[1])
	if err != nil {
		return err
	}
	if !o.NoWait {
		if t, err = c.WaitTask(ctx, t.ID); err != nil {
			return err
		}
	}
	if g.JSON {
		return printJSON(out, t)
	}
	return printTask(out, t)
}

func printTask(out io.Writer, t *client.Task) error {
	progress := fmt.Sprintf("%d/%d", t.Done, t.Total)
	return table(out, "TASK\tKIND\tTARGET\tSTATE\tPROGRESS\tERROR",
		[][]string{{t.ID, t.Kind, t.Disk + "@" + t.Snapshot, t.State, progress, orDash(t.Error)}})
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

var replicationCmd = &cobra.Command{
	Use:     "replication",
	Aliases: []string{"repl"},
	Short:   "Replicate disk groups to another host; test failover, planned migration, disaster failover, reprotect",
	Long: `Site recovery (docs/replication.md). On the SOURCE host: create, list,
show, pause, resume, rm, sync (a cycle now), failover --planned (a planned
migration) and resync --winner source. On the TARGET host: replicas,
failover --test/--cleanup/(disaster), reprotect.

The target needs a token of scope replication:
  blockwise --datastore TARGET token create siteA --scope replication
and its API certificate's CA given to --target-ca.`,
}

type replicationFlags struct {
	disks                        []string
	target, token, ca            string
	rpo, keepWithin, compression string
	keep                         int
	bwlimit                      int64
	seed                         bool
	test, cleanup, planned       bool
	point                        uint64
	winner                       string
}

var replFlags replicationFlags

func init() {
	create := &cobra.Command{Use: "create NAME --disk SRC[:TARGET]... --target URL", Short: "Define a replication group and start it", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplCreate(cmd.Context(), globals, a[0], replFlags, cmd.OutOrStdout())
		}}
	f := create.Flags()
	f.StringArrayVar(&replFlags.disks, "disk", nil, "a disk of the group: SOURCE or SOURCE:TARGETNAME (repeatable; one snapshot instant for all)")
	addTargetFlags(create, &replFlags)
	f.StringVar(&replFlags.rpo, "rpo", "15m", "recovery point objective, 15s to 24h")
	f.IntVar(&replFlags.keep, "keep", 24, "points kept on the target")
	f.StringVar(&replFlags.keepWithin, "keep-within", "", "keep every point younger than this, then one an hour for --keep hours")
	f.Int64Var(&replFlags.bwlimit, "bwlimit", 0, "bandwidth limit, bytes a second (0: none)")
	f.StringVar(&replFlags.compression, "compression", "zstd", "wire compression: zstd or none")
	f.BoolVar(&replFlags.seed, "seed", false, "the target disks exist: compare checksums, send only differing blocks")
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List replication groups (source side)", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplList(cmd.Context(), globals, cmd.OutOrStdout())
		}}
	show := &cobra.Command{Use: "show NAME", Short: "Show a group's status", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplShow(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		}}
	replicationCmd.AddCommand(create, list, show)
	for _, act := range []string{"pause", "resume", "sync"} {
		replicationCmd.AddCommand(&cobra.Command{Use: act + " NAME", Short: strings.ToUpper(act[:1]) + act[1:] + " a group", Args: args(1, 1),
			RunE: func(cmd *cobra.Command, a []string) error {
				return runReplAction(cmd.Context(), globals, a[0], act, nil, cmd.OutOrStdout())
			}})
	}
	rm := &cobra.Command{Use: "rm NAME", Aliases: []string{"delete"}, Short: "Stop and remove a group (the target keeps its replica)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplRm(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		}}
	replicas := &cobra.Command{Use: "replicas", Short: "List the replica groups this host keeps (target side)", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplicas(cmd.Context(), globals, cmd.OutOrStdout())
		}}
	failover := &cobra.Command{Use: "failover GROUP", Short: "Fail over: --test (scratch copies), --cleanup, --planned (on the source), or disaster (on the target)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runFailover(cmd.Context(), globals, a[0], replFlags, cmd.OutOrStdout())
		}}
	failover.Flags().BoolVar(&replFlags.test, "test", false, "export a writable scratch copy DISK-test of a point while replication goes on (target)")
	failover.Flags().Uint64Var(&replFlags.point, "point", 0, "the point of --test (default the latest)")
	failover.Flags().BoolVar(&replFlags.cleanup, "cleanup", false, "end a test failover (target)")
	failover.Flags().BoolVar(&replFlags.planned, "planned", false, "planned migration: final sync with writes stopped, then the target takes over (source)")
	reprotect := &cobra.Command{Use: "reprotect GROUP --target URL", Short: "Reverse a failed-over group toward its old source (target side)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReprotect(cmd.Context(), globals, a[0], replFlags, cmd.OutOrStdout())
		}}
	addTargetFlags(reprotect, &replFlags)
	reprotect.Flags().StringVar(&replFlags.rpo, "rpo", "15m", "RPO of the reversed group")
	resync := &cobra.Command{Use: "resync GROUP --winner source|target", Short: "End a split-brain: the winner's data is kept, the loser's kept as a snapshot", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runReplAction(cmd.Context(), globals, a[0], "resync", client.ResyncRequest{Winner: replFlags.winner}, cmd.OutOrStdout())
		}}
	resync.Flags().StringVar(&replFlags.winner, "winner", "", "source or target")
	replicationCmd.AddCommand(rm, replicas, failover, reprotect, resync)
	rootCmd.AddCommand(replicationCmd)
}

func addTargetFlags(c *cobra.Command, o *replicationFlags) {
	c.Flags().StringVar(&o.target, "target", "", "the target host: https://HOST:PORT or unix:///path/api.sock")
	c.Flags().StringVar(&o.token, "target-token", os.Getenv("BLOCKWISE_TARGET_TOKEN"), "the target's replication-scoped token (env BLOCKWISE_TARGET_TOKEN)")
	c.Flags().StringVar(&o.ca, "target-ca", "", "PEM file of the CA that vouches for the target's API certificate")
}

func readCA(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("--target-ca: %v", err)
	}
	return string(b), nil
}

func runReplCreate(ctx context.Context, g globalOptions, name string, o replicationFlags, out io.Writer) error {
	req := client.CreateReplicationRequest{Name: name, Target: o.target, Token: o.token, RPO: o.rpo, Keep: o.keep,
		KeepWithin: o.keepWithin, BandwidthLimit: o.bwlimit, Compression: o.compression, Seed: o.seed}
	for _, d := range o.disks {
		src, tgt, _ := strings.Cut(d, ":")
		req.Disks = append(req.Disks, client.ReplicationDisk{Source: src, Target: tgt})
	}
	ca, err := readCA(o.ca)
	if err != nil {
		return err
	}
	req.CACert = ca
	r, err := ask(g, func(c *client.Client) (*client.Replication, error) { return c.CreateReplication(ctx, req) })
	if err != nil {
		return err
	}
	return printGroup(g, r, out)
}

func printGroup(g globalOptions, r *client.Replication, out io.Writer) error {
	if g.JSON {
		return printJSON(out, r)
	}
	fmt.Fprintf(out, "group %s: %s (rpo %s, keep %d, target %s)\n", r.Name, r.State, r.RPO, r.Keep, r.Target)
	if r.LastPoint != nil {
		fmt.Fprintf(out, "last point %d at %s (%.0fs old)\n", r.LastPoint.Seq, r.LastPoint.Time.Local().Format(time.DateTime), r.LastPointAge)
	}
	if c := r.LastCycle; c != nil {
		fmt.Fprintf(out, "last cycle %d: %d bytes changed, %d on the wire, %.2fs, %.1f MB/s\n", c.Seq, c.Bytes, c.WireBytes, c.Seconds, c.Rate/1e6)
	}
	if r.Error != "" {
		fmt.Fprintf(out, "error: %s\n", r.Error)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	return nil
}

func runReplList(ctx context.Context, g globalOptions, out io.Writer) error {
	rs, err := ask(g, func(c *client.Client) ([]client.Replication, error) { return c.ListReplications(ctx) })
	if err != nil {
		return err
	}
	return printRows(g, out, rs, "NAME\tSTATE\tRPO\tLAST POINT\tTARGET", func(r client.Replication) []string {
		last := "-"
		if r.LastPoint != nil {
			last = fmt.Sprintf("%d (%.0fs)", r.LastPoint.Seq, r.LastPointAge)
		}
		return []string{r.Name, r.State, r.RPO, last, r.Target}
	})
}

func runReplShow(ctx context.Context, g globalOptions, name string, out io.Writer) error {
	r, err := ask(g, func(c *client.Client) (*client.Replication, error) { return c.Replication(ctx, name) })
	if err != nil {
		return err
	}
	return printGroup(g, r, out)
}

func runReplAction(ctx context.Context, g globalOptions, name, act string, body any, out io.Writer) error {
	_, err := ask(g, func(c *client.Client) (any, error) {
		t, err := c.ReplicationAction(ctx, name, act, body)
		return nil, waitTask(ctx, c, t, err)
	})
	if err != nil {
		return err
	}
	return runReplShow(ctx, g, name, out)
}

func runReplRm(ctx context.Context, g globalOptions, name string, out io.Writer) error {
	_, err := ask(g, func(c *client.Client) (any, error) { return nil, c.DeleteReplication(ctx, name) })
	if err != nil {
		return err
	}
	if !g.JSON {
		fmt.Fprintf(out, "removed %s\n", name)
	}
	return nil
}

func runReplicas(ctx context.Context, g globalOptions, out io.Writer) error {
	rs, err := ask(g, func(c *client.Client) ([]client.Replica, error) { return c.ListReplicas(ctx) })
	if err != nil {
		return err
	}
	return printRows(g, out, rs, "GROUP\tSTATE\tLAST POINT\tPOINTS", func(r client.Replica) []string {
		last := "-"
		if n := len(r.Points); n > 0 {
			last = fmt.Sprint(r.Points[n-1].Seq)
		}
		return []string{r.Group, r.State, last, fmt.Sprint(len(r.Points))}
	})
}

func runFailover(ctx context.Context, g globalOptions, grp string, o replicationFlags, out io.Writer) error {
	n := 0
	for _, b := range []bool{o.test, o.cleanup, o.planned} {
		if b {
			n++
		}
	}
	if n > 1 {
		return usageErrorf("--test, --cleanup and --planned exclude each other")
	}
	if o.planned {
		return runReplAction(ctx, g, grp, "failover", nil, out)
	}
	mode := "disaster"
	switch {
	case o.test:
		mode = "test"
	case o.cleanup:
		mode = "cleanup"
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	t, err := c.ReplicaAction(ctx, grp, "failover", client.FailoverRequest{Mode: mode, Point: o.point})
	if err := waitTask(ctx, c, t, err); err != nil {
		return err
	}
	return showReplica(ctx, g, c, grp, out)
}

func showReplica(ctx context.Context, g globalOptions, c *client.Client, grp string, out io.Writer) error {
	r, err := c.Replica(ctx, grp)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, r)
	}
	fmt.Fprintf(out, "replica %s: %s, %d points\n", r.Group, r.State, len(r.Points))
	for d, exp := range r.Tests {
		fmt.Fprintf(out, "test copy of %s: NBD export %s\n", d, exp)
	}
	return nil
}

func runReprotect(ctx context.Context, g globalOptions, grp string, o replicationFlags, out io.Writer) error {
	ca, err := readCA(o.ca)
	if err != nil {
		return err
	}
	_, err = ask(g, func(c *client.Client) (any, error) {
		t, err := c.ReplicaAction(ctx, grp, "reprotect", client.ReprotectRequest{Target: o.target, Token: o.token, CACert: ca, RPO: o.rpo})
		return nil, waitTask(ctx, c, t, err)
	})
	if err != nil {
		return err
	}
	return runReplShow(ctx, g, grp, out)
}

package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

type leaseOptions struct {
	Owner      string
	TTL        time.Duration
	Wait       time.Duration
	Generation uint64
}

var leaseOpts leaseOptions

var leaseCmd = &cobra.Command{
	Use:   "lease",
	Short: "Sector leases (ATS): on-disk locks taken by compare-and-write",
	Long: `A sector lease is a lock record in one 512-byte sector of a disk, changed
only by compare-and-write (POST /v1/disks/{disk}/compare-and-write), as
VMFS keeps its heartbeats and locks: every host and guest sharing the disk
sees it. The holder renews it (a heartbeat); another owner may take it
over only after its heartbeat has stood still for the lease's TTL.

Not the backup lease of /v1/disks/{disk}/lease, which the host keeps in
memory to keep two backups of one disk apart (blockwise backup takes it).

OFFSET is a byte offset, a multiple of 512. acquire prints the lease's
generation; renew and release accept it with --generation as a token, so
that a stale process cannot renew or free a lease that changed hands.`,
}

func init() {
	mk := func(use, short string, run func(context.Context, globalOptions, leaseOptions, []string, io.Writer) error) *cobra.Command {
		return &cobra.Command{Use: use + " DISK OFFSET", Short: short, Args: args(2, 2),
			RunE: func(cmd *cobra.Command, a []string) error {
				return run(cmd.Context(), globals, leaseOpts, a, cmd.OutOrStdout())
			}}
	}
	acquire := mk("acquire", "Take a sector lease (with --wait, take over a stale one)", runLeaseAcquire)
	renew := mk("renew", "Beat a held sector lease's heartbeat", runLeaseRenew)
	release := mk("release", "Free a held sector lease", runLeaseRelease)
	show := mk("show", "Print a sector lease record", runLeaseShow)
	for _, c := range []*cobra.Command{acquire, renew, release} {
		c.Flags().StringVar(&leaseOpts.Owner, "owner", "", "owner name written in the record (required)")
	}
	acquire.Flags().DurationVar(&leaseOpts.TTL, "ttl", 10*time.Second, "a heartbeat unchanged this long lets others take the lease over")
	acquire.Flags().DurationVar(&leaseOpts.Wait, "wait", 0, "wait up to this long for the lease (a stale one is taken over after its TTL)")
	for _, c := range []*cobra.Command{renew, release} {
		c.Flags().Uint64Var(&leaseOpts.Generation, "generation", 0, "the generation acquire printed (0: any of this owner's)")
	}
	leaseCmd.AddCommand(acquire, renew, release, show)
	rootCmd.AddCommand(leaseCmd)
}

// leaseArgs parses DISK OFFSET and checks --owner where it is needed.
func leaseArgs(g globalOptions, o leaseOptions, a []string, needOwner bool) (*client.Client, int64, error) {
	off, err := strconv.ParseInt(a[1], 10, 64)
	if err != nil || off < 0 || off%512 != 0 {
		return nil, 0, usageErrorf("lease: offset %q is not a non-negative multiple of 512", a[1])
	}
	if needOwner && o.Owner == "" {
		return nil, 0, usageErrorf("lease: --owner is required")
	}
	c, err := g.client()
	return c, off, err
}

func runLeaseAcquire(ctx context.Context, g globalOptions, o leaseOptions, a []string, out io.Writer) error {
	c, off, err := leaseArgs(g, o, a, true)
	if err != nil {
		return err
	}
	if o.TTL <= 0 {
		return usageErrorf("lease acquire: --ttl must be positive")
	}
	l := c.SectorLease(a[0], off, o.Owner, o.TTL)
	var rec client.LeaseRecord
	if o.Wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, o.Wait)
		defer cancel()
		rec, err = l.Acquire(wctx)
	} else {
		rec, err = l.TryAcquire(ctx)
	}
	if err != nil {
		return err
	}
	return printLease(g, out, rec)
}

func runLeaseRenew(ctx context.Context, g globalOptions, o leaseOptions, a []string, out io.Writer) error {
	return leaseChange(ctx, g, o, a, out, (*client.SectorLease).Renew)
}

func runLeaseRelease(ctx context.Context, g globalOptions, o leaseOptions, a []string, out io.Writer) error {
	return leaseChange(ctx, g, o, a, out, (*client.SectorLease).Release)
}

func leaseChange(ctx context.Context, g globalOptions, o leaseOptions, a []string, out io.Writer,
	op func(*client.SectorLease, context.Context) (client.LeaseRecord, error)) error {
	c, off, err := leaseArgs(g, o, a, true)
	if err != nil {
		return err
	}
	l := c.SectorLease(a[0], off, o.Owner, 0)
	if _, err := l.Adopt(ctx, o.Generation); err != nil {
		return err
	}
	rec, err := op(l, ctx)
	if err != nil {
		return err
	}
	return printLease(g, out, rec)
}

func runLeaseShow(ctx context.Context, g globalOptions, o leaseOptions, a []string, out io.Writer) error {
	c, off, err := leaseArgs(g, o, a, false)
	if err != nil {
		return err
	}
	rec, err := c.ReadSectorLease(ctx, a[0], off)
	if err != nil {
		return err
	}
	return printLease(g, out, rec)
}

func printLease(g globalOptions, out io.Writer, r client.LeaseRecord) error {
	if g.JSON {
		return printJSON(out, r)
	}
	state := "free"
	if r.Held {
		state = "held"
	}
	when := "-"
	if r.Generation > 0 {
		when = fmt.Sprintf("%s (%s ago by the writer's clock)", r.Time.Format(time.RFC3339Nano), time.Since(r.Time).Round(time.Millisecond))
	}
	return table(out, "FIELD\tVALUE", [][]string{{"state", state}, {"owner", orDash(r.Owner)},
		{"generation", strconv.FormatUint(r.Generation, 10)}, {"heartbeat", strconv.FormatUint(r.Heartbeat, 10)},
		{"written", when}, {"ttl", r.TTL.String()}})
}

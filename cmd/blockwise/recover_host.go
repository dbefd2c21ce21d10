package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// runHostRecover has the host run the recovery as a job (recover without
// --overlay) and prints where the VM attaches; with --wait it follows the
// job until the switch.
func runHostRecover(ctx context.Context, g globalOptions, o recoverOptions, ref string, out io.Writer) error {
	if o.Socket != "" || o.Listen != "" {
		return usageErrorf("--socket and --listen go with --overlay: the host serves its recoveries under its datastore (recoveries/NAME.sock)")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	req := wire.RecoveryRequest{Point: ref, Disk: o.Disk, Policy: o.Policy, ToDisk: o.ToDisk, Resume: o.Resume,
		Workers: o.Workers, RateMiB: o.RateMB, CacheMiB: o.CacheMB}
	rec, err := c.Recover(ctx, req)
	if err != nil {
		return err
	}
	if g.JSON && !o.Wait {
		return printJSON(out, rec)
	}
	fmt.Fprintf(out, "job %s recovers point %s into disk %s on the host (%s)\n%s\nqemu-system-x86_64 ... %s\n",
		rec.Job, rec.Point[:min(12, len(rec.Point))], rec.ToDisk, rec.Phase, rec.URI, rec.Qemu)
	if !o.Wait {
		return nil
	}
	return followRecovery(ctx, g, rec.Job, out)
}

// followRecovery prints the job's progress every few seconds until it
// reaches the switch or ends (an end before the switch is an error).
func followRecovery(ctx context.Context, g globalOptions, id string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	last := time.Time{}
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return err
		}
		p := j.Progress
		switch {
		case p.Stage == "switched":
			fmt.Fprintf(out, "switched to the new disk; job %s serves it until canceled\n", id)
			return nil
		case j.Done():
			return fmt.Errorf("job %s ended %s before the switch: %s", id, j.State, j.Error)
		case time.Since(last) >= 5*time.Second:
			last = time.Now()
			fmt.Fprintf(out, "%s: %s of %s (%d%%), %s/s, ETA %s\n", p.Stage, human(p.Done), human(p.Total),
				100*p.Done/max(p.Total, 1), human(int64(p.Rate)), (time.Duration(p.ETASeconds) * time.Second).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// runRecoverList prints the host's recoveries: running (with their job)
// or resumable.
func runRecoverList(ctx context.Context, g globalOptions, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	list, err := c.Recoveries(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, list)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TO DISK\tPOINT\tPOLICY\tPHASE\tJOB\tURI")
	for _, r := range list {
		job := r.Job
		if job == "" {
			job = "- (resume it)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ToDisk, r.Point[:min(12, len(r.Point))], cmp.Or(r.Policy, "-"), r.Phase, job, r.URI)
	}
	return tw.Flush()
}

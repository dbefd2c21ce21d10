package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

var jobListOpts client.JobFilter

var jobCmd = &cobra.Command{
	Use:   "job",
	Short: "The host's job history: what it ran and runs (backups, restores, prunes, checks, consolidations)",
	Long: `Every operation the host runs is a job, kept in DATASTORE/jobs.db
across restarts: its state (queued, running, succeeded, failed, canceled,
or interrupted when the host died while it ran), progress (stage, bytes,
rate, ETA), the summary the CLI prints for the same operation, and its
log lines. The newest 10000 ended jobs of the last 90 days are kept.`,
}

func init() {
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List jobs, newest first", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runJobList(cmd.Context(), globals, jobListOpts, cmd.OutOrStdout())
		},
	}
	f := list.Flags()
	f.StringVar(&jobListOpts.State, "state", "", "only jobs in this state (running, succeeded, failed, canceled, interrupted)")
	f.StringVar(&jobListOpts.Kind, "kind", "", "only jobs of this kind (backup, restore, prune, check, forget, serve-point, consolidate)")
	f.StringVar(&jobListOpts.Policy, "policy", "", "only jobs of this policy")
	f.StringVar(&jobListOpts.Source, "source", "", "only jobs of this disk")
	f.IntVar(&jobListOpts.Limit, "limit", 50, "at most this many (0: all)")
	show := &cobra.Command{
		Use: "show ID", Short: "Show a job: state, progress, summary, error", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runJobShow(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		},
	}
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Ask a running job to stop; it ends canceled", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runJobCancel(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		},
	}
	var follow bool
	logc := &cobra.Command{
		Use: "log ID", Short: "Print a job's log; -f follows it until the job ends", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runJobLog(cmd.Context(), globals, a[0], follow, cmd.OutOrStdout())
		},
	}
	logc.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the job ends")
	jobCmd.AddCommand(list, show, cancel, logc)
	rootCmd.AddCommand(jobCmd)
}

func runJobList(ctx context.Context, g globalOptions, f client.JobFilter, out io.Writer) error {
	if f.Limit < 0 {
		return usageErrorf("--limit %d: want 0 or more", f.Limit)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	list, err := c.ListJobs(ctx, f)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, list)
	}
	rows := make([][]string, 0, len(list))
	for _, j := range list {
		rows = append(rows, []string{j.ID, j.Kind, dash(j.Policy), dash(j.Source), j.State,
			j.Created.Local().Format(time.DateTime), jobDuration(j), jobProgress(j)})
	}
	return table(out, "ID\tKIND\tPOLICY\tSOURCE\tSTATE\tCREATED\tDURATION\tPROGRESS", rows)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// jobDuration is the job's wall time so far.
func jobDuration(j client.Job) string {
	if j.Started == nil {
		return "-"
	}
	end := time.Now()
	if j.Ended != nil {
		end = *j.Ended
	}
	return end.Sub(*j.Started).Round(time.Millisecond).String()
}

// jobProgress is "STAGE DONE/TOTAL RATE ETA" for a running job.
func jobProgress(j client.Job) string {
	p := j.Progress
	if j.Done() || p.Stage == "" {
		return "-"
	}
	s := p.Stage
	if p.Total > 0 {
		s += fmt.Sprintf(" %.1f/%.1f MiB", float64(p.Done)/(1<<20), float64(p.Total)/(1<<20))
	}
	if p.Rate > 0 {
		s += fmt.Sprintf(" %.1f MiB/s", p.Rate/(1<<20))
	}
	if p.ETASeconds > 0 {
		s += " eta " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	return s
}

func runJobShow(ctx context.Context, g globalOptions, id string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	j, err := c.Job(ctx, id)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, j)
	}
	fmt.Fprintf(out, "job %s: %s", j.ID, j.Kind)
	if j.Policy != "" {
		fmt.Fprintf(out, " (policy %s)", j.Policy)
	}
	if j.Source != "" {
		fmt.Fprintf(out, " of %s", j.Source)
	}
	fmt.Fprintf(out, "\n  state %s, attempt %d, created %s, duration %s\n", j.State, j.Attempt, j.Created.Local().Format(time.DateTime), jobDuration(*j))
	if p := jobProgress(*j); p != "-" {
		fmt.Fprintf(out, "  progress %s\n", p)
	}
	var steps []string
	for _, s := range j.Progress.Stages {
		steps = append(steps, fmt.Sprintf("%s %.3fs", s.Name, s.Seconds))
	}
	if len(steps) > 0 {
		fmt.Fprintf(out, "  stages: %s\n", strings.Join(steps, ", "))
	}
	if j.Error != "" {
		fmt.Fprintf(out, "  error: %s\n", j.Error)
	}
	if len(j.Summary) > 0 {
		fmt.Fprintf(out, "  summary: %s\n", j.Summary)
	}
	fmt.Fprintf(out, "  log: %d lines (blockwise job log %s)\n", j.LogLines, j.ID)
	return nil
}

func runJobCancel(ctx context.Context, g globalOptions, id string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	j, err := c.CancelJob(ctx, id)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, j)
	}
	fmt.Fprintf(out, "job %s: cancel requested\n", j.ID)
	return nil
}

// runJobLog prints the log; with follow it long-polls for new lines
// until the job ends.
func runJobLog(ctx context.Context, g globalOptions, id string, follow bool, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	after := 0
	for {
		wait := time.Duration(0)
		if follow {
			wait = 30 * time.Second
		}
		l, err := c.JobLogLines(ctx, id, after, wait)
		if err != nil {
			return err
		}
		for _, line := range l.Lines {
			if g.JSON {
				printJSON(out, line)
			} else {
				fmt.Fprintf(out, "%s %-5s %s\n", line.Time.Local().Format(time.RFC3339), line.Level, line.Msg)
			}
			after = line.N
		}
		if !follow || (l.Job.Done() && len(l.Lines) == 0) {
			return nil
		}
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/client"
)

// policyFlags are the flags of policy create and edit.
type policyFlags struct {
	p            client.Policy
	passwordFile string
	s3FromEnv    bool
	q            sourceOptions // --quiesce and its window and hooks
}

var policyOpts policyFlags

var policyCmd = &cobra.Command{
	Use:   "policy",
	Short: "Protection policies the host runs: which disks, when, to which repository, kept how long",
	Long: `A policy is run by the host (blockwise serve): on its schedule (a cron
expression read in --time-zone, or "@every 15m") it backs up each disk
it selects (by name, glob or label) and each hypervisor source (--source
qemu+unix://..., libvirt://..., qemu+ssh://...: all of a VM's drives in
one job, quiesced per --quiesce) into its repository, with the repository
opened once and its key held in memory, then applies its --keep-* rules
to that disk's points. Prunes and checks (each reading the next group of
--check-groups, so that many checks read every pack once) run on their
own schedules. A failed backup is retried --retries times, the backoff
doubling. A run missed while the host was down runs once when it starts.
The repository password (--password-file) and S3 keys (--s3-keys-from-env:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are kept by the host in
DATASTORE/policy-credentials.json, mode 0600, and never shown again.
Every run is a job: blockwise job list --policy NAME.`,
}

func addPolicyFlags(f *pflag.FlagSet, o *policyFlags) {
	f.StringSliceVar(&o.p.Sources.Disks, "disk", nil, "back up this disk (repeatable)")
	f.StringSliceVar(&o.p.Sources.Globs, "glob", nil, "back up the disks matching this shell pattern, e.g. 'web-*' (repeatable)")
	f.StringArrayVar(&o.p.Sources.Labels, "label", nil, "back up the disks whose labels this selector selects, e.g. 'tier=gold,env!=dev' (repeatable; see blockwise disk label)")
	f.StringArrayVar(&o.p.Sources.URIs, "source", nil, "back up this QEMU or libvirt VM (all its drives, one job): qemu+unix:///PATH/qmp.sock[?drive=A,B&agent=PATH&name=VM], libvirt:///system?domain=NAME[&disk=vda] or qemu+ssh://[USER@]HOST[:PORT]/system?domain=NAME[&keyfile=PATH] (repeatable; no password in it)")
	addQuiesceFlags(f, &o.q)
	f.StringVar(&o.p.Schedule, "schedule", "", `when: a cron expression ("0 2 * * *", "@daily") or "@every 15m"`)
	f.StringVar(&o.p.TimeZone, "time-zone", "", "IANA time zone of the cron expressions (default UTC)")
	f.StringVarP(&o.p.Repository.Location, "repo", "r", "", "repository: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]")
	f.StringVar(&o.passwordFile, "password-file", "", "file holding the repository password (sent to the host, kept 0600)")
	f.BoolVar(&o.s3FromEnv, "s3-keys-from-env", false, "send AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the host for an s3: repository")
	f.StringVar(&o.p.Transport, "transport", "", "transport modes to try, in order (default san,hotadd,nbdssl,nbd)")
	f.IntVar(&o.p.Retention.Last, "keep-last", 0, "keep the newest N points of each disk")
	f.IntVar(&o.p.Retention.Hourly, "keep-hourly", 0, "keep the newest point of each of the last N hours")
	f.IntVar(&o.p.Retention.Daily, "keep-daily", 0, "... days")
	f.IntVar(&o.p.Retention.Weekly, "keep-weekly", 0, "... weeks")
	f.IntVar(&o.p.Retention.Monthly, "keep-monthly", 0, "... months")
	f.IntVar(&o.p.Retention.Yearly, "keep-yearly", 0, "... years")
	f.StringVar(&o.p.Retention.Within, "keep-within", "", "keep every point within this span of the newest (7d, 1y6m)")
	f.StringVar(&o.p.PruneSchedule, "prune-schedule", "", "when to prune (cron or @every; default never)")
	f.StringVar(&o.p.CheckSchedule, "check-schedule", "", "when to check (cron or @every; default never)")
	f.IntVar(&o.p.CheckGroups, "check-groups", 0, "each check reads the next of N groups of packs (--read-data-subset n/N); 0 reads none")
	f.IntVar(&o.p.MaxConcurrent, "max-concurrent", 1, "backups of this policy at once")
	f.IntVar(&o.p.Retries, "retries", 0, "retries of a failed backup")
	f.StringVar(&o.p.RetryBackoff, "retry-backoff", "", "first retry's delay, doubling (default 30s)")
	f.StringVar(&o.p.StaleAfter, "stale-after", "", "a disk without a successful backup this long is stale (default twice the schedule's period)")
	f.Int64Var(&o.p.LimitUploadKiB, "limit-upload", 0, "send at most this many KiB/s to the repository (0: no limit)")
	f.BoolVar(&o.p.Paused, "paused", false, "keep the policy but run nothing on its schedules")
}

func init() {
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a policy", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPolicyCreate(cmd.Context(), globals, a[0], &policyOpts, cmd.OutOrStdout())
		},
	}
	addPolicyFlags(create.Flags(), &policyOpts)
	var editOpts policyFlags
	edit := &cobra.Command{
		Use: "edit NAME", Short: "Change the flags given of a policy (the others keep their values)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPolicyEdit(cmd.Context(), globals, a[0], cmd.Flags(), &editOpts, cmd.OutOrStdout())
		},
	}
	addPolicyFlags(edit.Flags(), &editOpts)
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List policies: sources, schedule, next run, stale and failing disks", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPolicyList(cmd.Context(), globals, cmd.OutOrStdout())
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a policy and each of its sources' last success, failures since and staleness", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPolicyShow(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove a policy (running jobs go on; points stay)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			_, err := ask(globals, func(c *client.Client) (any, error) { return nil, c.DeletePolicy(cmd.Context(), a[0]) })
			return err
		},
	}
	var what string
	var wait bool
	run := &cobra.Command{
		Use: "run NAME", Short: "Run a policy now (a backup of each disk, or --what prune|check)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runPolicyRun(cmd.Context(), globals, a[0], what, wait, cmd.OutOrStdout())
		},
	}
	run.Flags().StringVar(&what, "what", "backup", "backup, prune or check")
	run.Flags().BoolVar(&wait, "wait", false, "wait for the jobs to end; fail if one failed")
	policyCmd.AddCommand(create, edit, list, show, rm, run)
	rootCmd.AddCommand(policyCmd)
}

// secrets reads the password file and the S3 keys the flags ask for,
// and puts the quiescing flags into the policy.
func (o *policyFlags) secrets() error {
	o.p.Quiesce = client.PolicyQuiesce{Mode: o.q.Quiesce, Timeout: o.q.QuiesceTimeout.String(), PreFreeze: o.q.PreFreeze, PostThaw: o.q.PostThaw}
	if o.passwordFile != "" {
		pw, _, err := readPassword(o.passwordFile, "")
		if err != nil {
			return usageErrorf("--password-file: %w", err)
		}
		if pw == "" {
			return usageErrorf("--password-file %s is empty", o.passwordFile)
		}
		o.p.Repository.Password = pw
	}
	if o.s3FromEnv {
		o.p.Repository.AccessKey, o.p.Repository.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		if o.p.Repository.AccessKey == "" || o.p.Repository.SecretKey == "" {
			return usageErrorf("--s3-keys-from-env: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
		}
	}
	return nil
}

func runPolicyCreate(ctx context.Context, g globalOptions, name string, o *policyFlags, out io.Writer) error {
	if err := o.secrets(); err != nil {
		return err
	}
	if o.p.Repository.Password == "" {
		return usageErrorf("no password: give --password-file")
	}
	o.p.Name = name
	p, err := ask(g, func(c *client.Client) (*client.Policy, error) { return c.CreatePolicy(ctx, o.p) })
	if err != nil {
		return err
	}
	return printPolicy(g, p, out)
}

// runPolicyEdit applies the flags given to the policy as the host has it.
func runPolicyEdit(ctx context.Context, g globalOptions, name string, f *pflag.FlagSet, o *policyFlags, out io.Writer) error {
	if err := o.secrets(); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	cur, err := c.Policy(ctx, name)
	if err != nil {
		return err
	}
	p, n := *cur, o.p
	p.Repository.Password, p.Repository.AccessKey, p.Repository.SecretKey = n.Repository.Password, n.Repository.AccessKey, n.Repository.SecretKey
	set := map[string]func(){
		"disk": func() { p.Sources.Disks = n.Sources.Disks }, "glob": func() { p.Sources.Globs = n.Sources.Globs },
		"label": func() { p.Sources.Labels = n.Sources.Labels }, "source": func() { p.Sources.URIs = n.Sources.URIs },
		"quiesce": func() { p.Quiesce.Mode = n.Quiesce.Mode }, "quiesce-timeout": func() { p.Quiesce.Timeout = n.Quiesce.Timeout },
		"pre-freeze": func() { p.Quiesce.PreFreeze = n.Quiesce.PreFreeze }, "post-thaw": func() { p.Quiesce.PostThaw = n.Quiesce.PostThaw },
		"schedule": func() { p.Schedule = n.Schedule }, "time-zone": func() { p.TimeZone = n.TimeZone },
		"repo": func() { p.Repository.Location = n.Repository.Location }, "transport": func() { p.Transport = n.Transport },
		"keep-last": func() { p.Retention.Last = n.Retention.Last }, "keep-hourly": func() { p.Retention.Hourly = n.Retention.Hourly },
		"keep-daily": func() { p.Retention.Daily = n.Retention.Daily }, "keep-weekly": func() { p.Retention.Weekly = n.Retention.Weekly },
		"keep-monthly": func() { p.Retention.Monthly = n.Retention.Monthly }, "keep-yearly": func() { p.Retention.Yearly = n.Retention.Yearly },
		"keep-within": func() { p.Retention.Within = n.Retention.Within }, "prune-schedule": func() { p.PruneSchedule = n.PruneSchedule },
		"check-schedule": func() { p.CheckSchedule = n.CheckSchedule }, "check-groups": func() { p.CheckGroups = n.CheckGroups },
		"max-concurrent": func() { p.MaxConcurrent = n.MaxConcurrent }, "retries": func() { p.Retries = n.Retries },
		"retry-backoff": func() { p.RetryBackoff = n.RetryBackoff }, "stale-after": func() { p.StaleAfter = n.StaleAfter },
		"limit-upload": func() { p.LimitUploadKiB = n.LimitUploadKiB }, "paused": func() { p.Paused = n.Paused },
	}
	f.Visit(func(fl *pflag.Flag) {
		if apply := set[fl.Name]; apply != nil {
			apply()
		}
	})
	got, err := c.UpdatePolicy(ctx, name, p)
	if err != nil {
		return err
	}
	return printPolicy(g, got, out)
}

func runPolicyList(ctx context.Context, g globalOptions, out io.Writer) error {
	list, err := ask(g, func(c *client.Client) ([]client.Policy, error) { return c.ListPolicies(ctx) })
	if err != nil {
		return err
	}
	return printRows(g, out, list, "NAME\tSOURCES\tSCHEDULE\tNEXT RUN\tSELECTED\tSTALE\tFAILING", func(p client.Policy) []string {
		next, stale, failing := "-", 0, 0
		if p.Status != nil {
			if p.Status.NextRun != nil {
				next = p.Status.NextRun.Local().Format(time.DateTime)
			}
			for _, s := range p.Status.Sources {
				if s.Stale {
					stale++
				}
				if s.FailuresSince > 0 {
					failing++
				}
			}
		}
		srcs := strings.Join(sourceTerms(p.Sources), " ")
		sched := p.Schedule
		if p.Paused {
			sched += " (paused)"
		}
		return []string{p.Name, srcs, sched, next, fmt.Sprint(len(p.Status.Sources)), fmt.Sprint(stale), fmt.Sprint(failing)}
	})
}

func runPolicyShow(ctx context.Context, g globalOptions, name string, out io.Writer) error {
	p, err := ask(g, func(c *client.Client) (*client.Policy, error) { return c.Policy(ctx, name) })
	if err != nil {
		return err
	}
	return printPolicy(g, p, out)
}

func printPolicy(g globalOptions, p *client.Policy, out io.Writer) error {
	if g.JSON {
		return printJSON(out, p)
	}
	fmt.Fprintf(out, "policy %s: %s", p.Name, p.Schedule)
	if p.TimeZone != "" {
		fmt.Fprintf(out, " (%s)", p.TimeZone)
	}
	fmt.Fprintf(out, " to %s\n", p.Repository.Location)
	fmt.Fprintf(out, "  sources %s\n", strings.Join(sourceTerms(p.Sources), " "))
	if q := p.Quiesce; q != (client.PolicyQuiesce{}) {
		fmt.Fprintf(out, "  quiesce %s, at most %s", dash(q.Mode), dash(q.Timeout))
		if q.PreFreeze != "" || q.PostThaw != "" {
			fmt.Fprintf(out, ", pre-freeze %q, post-thaw %q", q.PreFreeze, q.PostThaw)
		}
		fmt.Fprintln(out)
	}
	st := p.Status
	if st == nil {
		return nil
	}
	key := "key held in memory"
	if !st.KeyReady {
		key = "key not derived yet"
		if st.KeyError != "" {
			key = "repository not open: " + st.KeyError
		}
	}
	next := "-"
	if st.NextRun != nil {
		next = st.NextRun.Local().Format(time.DateTime)
	}
	fmt.Fprintf(out, "  next run %s; %s\n", next, key)
	rows := make([][]string, 0, len(st.Sources))
	for _, s := range st.Sources {
		last := "never"
		if s.LastSuccess != nil {
			last = s.LastSuccess.Local().Format(time.DateTime)
		}
		stale := ""
		if s.Stale {
			stale = "STALE"
		}
		rows = append(rows, []string{"  " + s.Disk, last, dash(s.LastState), fmt.Sprint(s.FailuresSince), stale, dash(s.LastJob)})
	}
	return table(out, "  SOURCE\tLAST SUCCESS\tLAST STATE\tFAILURES SINCE\tSTALE\tLAST JOB", rows)
}

// runPolicyRun starts the policy now; with wait it waits for the jobs
// and fails if one did not succeed.
func runPolicyRun(ctx context.Context, g globalOptions, name, what string, wait bool, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	run, err := c.RunPolicy(ctx, name, what)
	if err != nil {
		return err
	}
	if !wait {
		if g.JSON {
			return printJSON(out, run)
		}
		for _, id := range run.Jobs {
			fmt.Fprintf(out, "started %s\n", id)
		}
		if len(run.Jobs) == 0 {
			fmt.Fprintln(out, "nothing started: no disk matches, or each is already queued or running")
		}
		return nil
	}
	var ended []client.Job
	var failed []string
	for _, id := range run.Jobs {
		j, err := c.WaitJob(ctx, id)
		if err != nil {
			return err
		}
		ended = append(ended, *j)
		if j.State != "succeeded" {
			failed = append(failed, fmt.Sprintf("%s (%s): %s", j.ID, j.State, j.Error))
		}
		if !g.JSON {
			fmt.Fprintf(out, "%s %s %s: %s %s\n", j.ID, j.Kind, dash(j.Source), j.State, j.Summary)
		}
	}
	if g.JSON {
		printJSON(out, ended)
	}
	if len(failed) > 0 {
		return fmt.Errorf("policy %s: %d job(s) did not succeed: %s", name, len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// sourceTerms shows a policy's sources: names, globs, label selectors
// as "label:SELECTOR", and source URIs.
func sourceTerms(s client.PolicySources) []string {
	out := append(append([]string(nil), s.Disks...), s.Globs...)
	for _, l := range s.Labels {
		out = append(out, "label:"+l)
	}
	return append(out, s.URIs...)
}

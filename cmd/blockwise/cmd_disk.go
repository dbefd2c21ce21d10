package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/labels"
)

type diskOptions struct {
	Selector    string
	Replace     bool
	Size        string
	Granularity string
	Grain       string
	NoCBT       bool
	Provision   string
	Agent       string
}

var diskOpts diskOptions

var diskCmd = &cobra.Command{Use: "disk", Short: "Create, list, inspect, grow and remove disks (through the host API)"}

func init() {
	create := &cobra.Command{
		Use: "create NAME --size SIZE [--provision thin|lazy-zeroed|eager-zeroed]", Short: "Create a disk (thin unless --provision says otherwise)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskCreate(cmd.Context(), globals, diskOpts, a, cmd.OutOrStdout())
		},
	}
	f := create.Flags()
	f.StringVar(&diskOpts.Size, "size", "", "size, e.g. 10G (required)")
	f.StringVar(&diskOpts.Granularity, "granularity", "", "CBT granularity, e.g. 64K (default 64K)")
	f.StringVar(&diskOpts.Grain, "grain", "", "snapshot delta grain, e.g. 4K (default 4K)")
	f.BoolVar(&diskOpts.NoCBT, "no-cbt", false, "disable changed block tracking")
	f.StringVar(&diskOpts.Provision, "provision", "thin", "thin (allocate on write), lazy-zeroed (reserve now) or eager-zeroed (reserve and zero now, with fallocate)")
	grow := &cobra.Command{
		Use: "grow NAME --size SIZE", Short: "Grow a disk", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskGrow(cmd.Context(), globals, diskOpts, a, cmd.OutOrStdout())
		},
	}
	grow.Flags().StringVar(&diskOpts.Size, "size", "", "new size, e.g. 20G (required)")
	list := &cobra.Command{
		Use: "list [--selector SELECTOR]", Aliases: []string{"ls"}, Short: "List disks (those whose labels a selector selects)", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskList(cmd.Context(), globals, diskOpts.Selector, cmd.OutOrStdout())
		},
	}
	list.Flags().StringVarP(&diskOpts.Selector, "selector", "l", "", "only disks whose labels meet it: 'tier=gold,env!=dev', 'backup', '!scratch', 'env=prod-*'")
	label := &cobra.Command{
		Use: "label NAME KEY=VALUE... [KEY-...]", Short: "Set (KEY=VALUE) or remove (KEY-) a disk's labels, which policies select sources by (--label)",
		Args: args(1, 1+2*labels.MaxPerDisk),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskLabel(cmd.Context(), globals, diskOpts, a, cmd.OutOrStdout())
		},
	}
	label.Flags().BoolVar(&diskOpts.Replace, "replace", false, "the disk's labels become exactly those given")
	info := &cobra.Command{
		Use: "info NAME", Aliases: []string{"show"}, Short: "Describe a disk (provisioned, allocated and unique bytes, snapshots, CBT)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskInfo(cmd.Context(), globals, a, cmd.OutOrStdout())
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove a disk (refused while NBD clients use it)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskRm(cmd.Context(), globals, a, cmd.OutOrStdout())
		},
	}
	set := &cobra.Command{
		Use: "set NAME --agent PATH", Short: "Set a disk's properties: --agent, the guest agent socket of the VM using it (backups quiesce the guest through it; \"\" forgets it)", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskSet(cmd.Context(), globals, cmd.Flags().Changed("agent"), diskOpts, a, cmd.OutOrStdout())
		},
	}
	set.Flags().StringVar(&diskOpts.Agent, "agent", "", "absolute path of the qemu-guest-agent socket of the VM using the disk (\"\" forgets it)")
	diskCmd.AddCommand(create, list, info, grow, set, rm, label)
	rootCmd.AddCommand(diskCmd)
}

func runDiskCreate(ctx context.Context, g globalOptions, o diskOptions, a []string, out io.Writer) error {
	if o.Size == "" {
		return usageErrorf("disk create: --size is required")
	}
	switch o.Provision {
	case "", "thin", "lazy-zeroed", "eager-zeroed":
	default:
		return usageErrorf("disk create: --provision %q: want thin, lazy-zeroed or eager-zeroed", o.Provision)
	}
	req := client.CreateDiskRequest{Name: a[0], DisableCBT: o.NoCBT, Provision: o.Provision}
	var err error
	if req.Size, err = parseSize(o.Size); err != nil {
		return err
	}
	if o.Granularity != "" {
		if req.CBTGranularity, err = parseSize(o.Granularity); err != nil {
			return err
		}
	}
	if o.Grain != "" {
		if req.Grain, err = parseSize(o.Grain); err != nil {
			return err
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	d, err := c.CreateDisk(ctx, req)
	if err != nil {
		return err
	}
	return printDisk(g, out, d)
}

func runDiskGrow(ctx context.Context, g globalOptions, o diskOptions, a []string, out io.Writer) error {
	if o.Size == "" {
		return usageErrorf("disk grow: --size is required")
	}
	size, err := parseSize(o.Size)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	d, err := c.GrowDisk(ctx, a[0], size)
	if err != nil {
		return err
	}
	return printDisk(g, out, d)
}

func runDiskSet(ctx context.Context, g globalOptions, agentSet bool, o diskOptions, a []string, out io.Writer) error {
	if !agentSet {
		return usageErrorf("disk set: nothing to set (--agent PATH)")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	d, err := c.SetDiskAgent(ctx, a[0], o.Agent)
	if err != nil {
		return err
	}
	return printDisk(g, out, d)
}

func runDiskList(ctx context.Context, g globalOptions, selector string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	list := c.ListDisks
	if selector != "" {
		if _, err := labels.ParseSelector(selector); err != nil {
			return usageErrorf("disk list --selector: %v", err)
		}
		list = func(ctx context.Context) ([]client.Disk, error) { return c.SelectDisks(ctx, selector) }
	}
	disks, err := list(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, disks)
	}
	var rows [][]string
	for _, d := range disks {
		rows = append(rows, []string{d.Name, human(d.Size), human(d.Allocated), strconv.Itoa(len(d.Snapshots)), orDash(d.ChangeID), orDash(labels.String(d.Labels))})
	}
	return table(out, "NAME\tSIZE\tALLOCATED\tSNAPSHOTS\tCHANGE ID\tLABELS", rows)
}

// runDiskLabel sets and removes labels (a PATCH), or replaces them all.
func runDiskLabel(ctx context.Context, g globalOptions, o diskOptions, a []string, out io.Writer) error {
	set, remove, err := labels.Parse(a[1:])
	if err != nil {
		return usageErrorf("disk label: %v", err)
	}
	if len(a) == 1 && !o.Replace {
		return usageErrorf("disk label %s: give KEY=VALUE or KEY- (or --replace alone to remove them all)", a[0])
	}
	if o.Replace && len(remove) > 0 {
		return usageErrorf("disk label --replace: KEY- has nothing to remove")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	var d *client.Disk
	if o.Replace {
		d, err = c.SetDiskLabels(ctx, a[0], set)
	} else {
		d, err = c.PatchDiskLabels(ctx, a[0], set, remove)
	}
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, d)
	}
	fmt.Fprintf(out, "disk %s: %s\n", d.Name, orDash(labels.String(d.Labels)))
	return nil
}

func runDiskInfo(ctx context.Context, g globalOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	d, err := c.Disk(ctx, a[0])
	if err != nil {
		return err
	}
	return printDisk(g, out, d)
}

func runDiskRm(ctx context.Context, g globalOptions, a []string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	if err := c.DeleteDisk(ctx, a[0]); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, map[string]string{"deleted": a[0]})
	}
	fmt.Fprintf(out, "deleted disk %s\n", a[0])
	return nil
}

func printDisk(g globalOptions, out io.Writer, d *client.Disk) error {
	if g.JSON {
		return printJSON(out, d)
	}
	rows := [][]string{
		{"name", d.Name}, {"uuid", d.UUID},
		{"size", fmt.Sprintf("%s (%d bytes)", human(d.Size), d.Size)},
		{"provisioned", fmt.Sprintf("%s (%d bytes, %s)", human(d.Size), d.Size, orDash(d.Provision))},
		{"allocated", fmt.Sprintf("%s (%d bytes)", human(d.Allocated), d.Allocated)},
		{"unique", fmt.Sprintf("%s (%d bytes; not shared with snapshots or clones)", human(d.Unique), d.Unique)},
		{"shared", fmt.Sprintf("%s (%d bytes; in layers a linked clone shares)", human(d.Shared), d.Shared)},
		{"grain", human(d.Grain)}, {"layers", strconv.Itoa(d.Layers)},
		{"change id", orDash(d.ChangeID)}, {"open exports", strconv.Itoa(d.OpenExports)},
		{"labels", orDash(labels.String(d.Labels))},
		{"guest agent", orDash(d.Agent)},
	}
	if d.CBT != nil {
		rows = append(rows, []string{"cbt", fmt.Sprintf("granularity %s, %d dirty blocks, oldest change ID %s",
			human(d.CBT.Granularity), d.CBT.DirtyBlocks, d.CBT.OldestChangeID)})
	} else {
		rows = append(rows, []string{"cbt", "disabled"})
	}
	if cs := d.Consolidation; cs != nil {
		rows = append(rows, []string{"consolidating", fmt.Sprintf("%s: %d/%d grains", cs.Snapshot, cs.Done, cs.Total)})
	}
	for _, s := range d.Snapshots {
		rows = append(rows, []string{"snapshot", fmt.Sprintf("%s  %s  %s", s.ID, s.Created.Format("2006-01-02 15:04:05"), orDash(s.ChangeID))})
	}
	return table(out, "FIELD\tVALUE", rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

type cloneOptions struct{ Linked bool }

var cloneOpts cloneOptions

type copyOptions struct {
	SourceOffset, Offset, Length string
	Datastore                    string
}

var copyOpts copyOptions

type reclaimOptions struct {
	Rate string
	Wait bool
}

var reclaimOpts reclaimOptions

func init() {
	clone := &cobra.Command{
		Use:   "clone SRC[@SNAP] DST [--linked]",
		Short: "Clone a disk inside the datastore (full: reflink or copy_file_range; --linked: O(1), sharing SNAP's layers)",
		Long: `Clone makes DST from SRC's snapshot SNAP. A full clone is an independent
disk copied inside the datastore (extents shared where the file system can
reflink, copy_file_range otherwise); without @SNAP it copies a temporary
snapshot of the live disk. A linked clone needs @SNAP: it shares the
snapshot's frozen layers copy-on-write and is made in O(1). Either way DST
has a new UUID and its own change tracking. Deleting either disk later
keeps the layers the other still uses.`,
		Args: args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskClone(cmd.Context(), globals, cloneOpts, a, cmd.OutOrStdout())
		},
	}
	clone.Flags().BoolVar(&cloneOpts.Linked, "linked", false, "share SNAP's layers copy-on-write instead of copying")
	reclaim := &cobra.Command{
		Use:   "reclaim NAME [--rate MB/s]",
		Short: "Give back the space of all-zero grains in the background, at a bounded rate",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskReclaim(cmd.Context(), globals, reclaimOpts, a, cmd.OutOrStdout())
		},
	}
	reclaim.Flags().StringVar(&reclaimOpts.Rate, "rate", "", "MB examined per second, e.g. 50 (or 512K); default unbounded")
	reclaim.Flags().BoolVar(&reclaimOpts.Wait, "wait", false, "wait for the reclaim to end")
	cp := &cobra.Command{
		Use:   "copy SRC[@SNAP] DST --length N [--source-offset N] [--offset N]",
		Short: "Copy an extent inside the datastore (data mover, XCOPY); exit 10 when the host cannot offload it",
		Args:  args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runDiskCopy(cmd.Context(), globals, copyOpts, a, cmd.OutOrStdout())
		},
	}
	cf := cp.Flags()
	cf.StringVar(&copyOpts.Length, "length", "", "bytes to copy, e.g. 4M (required; at most the host's maximum segment, 16M)")
	cf.StringVar(&copyOpts.SourceOffset, "source-offset", "0", "offset in SRC")
	cf.StringVar(&copyOpts.Offset, "offset", "0", "offset in DST")
	cf.StringVar(&copyOpts.Datastore, "source-datastore", "", "datastore ID of SRC (GET /v1/host); another than the host's cannot be offloaded")
	diskCmd.AddCommand(clone, reclaim, cp)
}

func runDiskClone(ctx context.Context, g globalOptions, o cloneOptions, a []string, out io.Writer) error {
	src, snap, _ := strings.Cut(a[0], "@")
	if o.Linked && snap == "" {
		return usageErrorf("disk clone: --linked needs a snapshot: SRC@SNAP")
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	res, err := c.CloneDisk(ctx, src, client.CloneRequest{Name: a[1], Snapshot: snap, Linked: o.Linked})
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, res)
	}
	how := "linked"
	if !o.Linked {
		s := res.Stats
		how = fmt.Sprintf("full: %s reflinked, %s copy_file_range, %s written, %s holes",
			human(s.Reflinked), human(s.Copied), human(s.Written), human(s.Zeroed))
	}
	fmt.Fprintf(out, "cloned %s to %s (%s)\n", a[0], a[1], how)
	return printDisk(g, out, &res.Disk)
}

func runDiskReclaim(ctx context.Context, g globalOptions, o reclaimOptions, a []string, out io.Writer) error {
	var rate int64
	if o.Rate != "" {
		var err error
		r := strings.TrimSuffix(strings.TrimSuffix(o.Rate, "/s"), "B")
		if strings.IndexFunc(r, func(c rune) bool { return c < '0' || c > '9' }) < 0 {
			r += "M" // a bare number is MB/s, as VMFS's reclaim rate
		}
		if rate, err = parseSize(r); err != nil {
			return err
		}
		if rate <= 0 {
			return usageErrorf("disk reclaim: --rate must be positive")
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	t, err := c.Reclaim(ctx, a[0], rate)
	if err != nil {
		return err
	}
	if o.Wait {
		if t, err = c.WaitTask(ctx, t.ID); err != nil {
			return err
		}
		if t.State == client.TaskFailed {
			return fmt.Errorf("reclaim of %s failed: %s", a[0], t.Error)
		}
	}
	if g.JSON {
		return printJSON(out, t)
	}
	fmt.Fprintf(out, "reclaim of %s: task %s %s\n", a[0], t.ID, t.State)
	return nil
}

func runDiskCopy(ctx context.Context, g globalOptions, o copyOptions, a []string, out io.Writer) error {
	if o.Length == "" {
		return usageErrorf("disk copy: --length is required")
	}
	var n [3]int64
	for i, v := range []string{o.Length, o.SourceOffset, o.Offset} {
		var err error
		if n[i], err = parseSize(v); err != nil {
			return err
		}
	}
	src, snap, _ := strings.Cut(a[0], "@")
	c, err := g.client()
	if err != nil {
		return err
	}
	req := client.CopyRequest{Source: client.CopySource{Datastore: o.Datastore, Disk: src, Snapshot: snap, Offset: n[1]}, Offset: n[2], Length: n[0]}
	res, err := c.CopyExtent(ctx, a[1], req)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, res)
	}
	s := res.Stats
	fmt.Fprintf(out, "copied %d bytes from %s to %s at %d: %s reflinked, %s copy_file_range, %s written, %s holes\n",
		res.Length, a[0], a[1], n[2], human(s.Reflinked), human(s.Copied), human(s.Written), human(s.Zeroed))
	return nil
}

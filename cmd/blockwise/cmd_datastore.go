package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
)

var datastoreCmd = &cobra.Command{
	Use:   "datastore",
	Short: "Show the datastore's capacity, use, provisioned bytes and the host's offloads",
	Long: `Show the datastore's file system capacity, used and free bytes, the sum
of its disks' sizes (provisioned: thin disks may promise more than the
capacity, the overcommit ratio), and a warning when use is at or above
the host's soft threshold (serve --space-warn, default 80%). Also lists
what the host offloads (VAAI): reflink clones, the copy segment, the
unmap granularity and the compare-and-write size.`,
	Args: args(0, 0),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runDatastore(cmd.Context(), globals, cmd.OutOrStdout())
	},
}

func init() { rootCmd.AddCommand(datastoreCmd) }

func runDatastore(ctx context.Context, g globalOptions, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	hi, err := c.Host(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, hi)
	}
	return printHost(out, hi)
}

func printHost(out io.Writer, hi *client.HostInfo) error {
	rows := [][]string{{"path", hi.DatastorePath}, {"id", hi.DatastoreID}}
	if s := hi.Space; s != nil {
		rows = append(rows,
			[]string{"capacity", fmt.Sprintf("%s (%d bytes)", human(s.Capacity), s.Capacity)},
			[]string{"used", fmt.Sprintf("%s (%.1f%%)", human(s.Used), 100*s.UsedRatio)},
			[]string{"free", human(s.Free)},
			[]string{"provisioned", fmt.Sprintf("%s in %d disks (overcommit %.2fx)", human(s.Provisioned), s.Disks, s.Overcommit)},
			[]string{"warn at", fmt.Sprintf("%.0f%%", 100*s.WarnRatio)},
			[]string{"warning", orDash(s.Warning)})
	}
	if o := hi.Offload; o != nil {
		seg := "none (copy through the client)"
		if o.MaxCopySegment > 0 {
			seg = human(o.MaxCopySegment)
		}
		rows = append(rows,
			[]string{"reflink", fmt.Sprint(o.Reflink)},
			[]string{"max copy segment", seg},
			[]string{"unmap granularity", human(o.UnmapGranularity)},
			[]string{"compare-and-write", fmt.Sprintf("up to %s, %d-byte aligned", human(o.CompareAndWriteMax), o.CompareAndWriteAlign)})
	}
	return table(out, "FIELD\tVALUE", rows)
}

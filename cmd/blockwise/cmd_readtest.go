package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/transport"
)

type readTestOptions struct {
	transportOptions
	Workers int
}

var readTestOpts readTestOptions

var readTestCmd = &cobra.Command{
	Use:   "read-test DISK",
	Short: "Measure a transport: snapshot the disk, read every allocated byte through --transport, discard it",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runReadTest(cmd.Context(), globals, readTestOpts, args[0], cmd.OutOrStdout())
	},
}

func init() {
	addTransportFlags(readTestCmd.Flags(), &readTestOpts.transportOptions)
	readTestCmd.Flags().IntVar(&readTestOpts.Workers, "workers", 4, "concurrent 4 MiB reads")
	rootCmd.AddCommand(readTestCmd)
}

func runReadTest(ctx context.Context, g globalOptions, o readTestOptions, disk string, out io.Writer) error {
	if o.Workers < 1 {
		return usageErrorf("--workers %d: want at least 1", o.Workers)
	}
	env, err := o.transportOptions.env(g)
	if err != nil {
		return err
	}
	res, err := transport.ReadTest(ctx, o.Order, env, disk, o.Workers)
	if err != nil {
		return err
	}
	if g.JSON {
		return json.NewEncoder(out).Encode(res)
	}
	fmt.Fprintf(out, "%s\nread %s in %.2fs: %.0f MB/s\n", res.Transport, human(res.Bytes), res.Seconds, res.MBps)
	return nil
}

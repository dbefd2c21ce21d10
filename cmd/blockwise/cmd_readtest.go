package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backup"
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

type readTestResult struct {
	Transport string  `json:"transport"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	MBps      float64 `json:"mbPerSecond"`
}

func runReadTest(ctx context.Context, g globalOptions, o readTestOptions, disk string, out io.Writer) (err error) {
	env, err := o.transportOptions.env(g)
	if err != nil {
		return err
	}
	h := backup.ClientHost{C: env.Client}
	snap, err := h.CreateSnapshot(ctx, disk, "blockwise read-test")
	if err != nil {
		return err
	}
	defer func() {
		if derr := backup.DeleteSnapshot(context.WithoutCancel(ctx), h, disk, snap.ID); err == nil {
			err = derr
		}
	}()
	areas, err := env.Client.AllChangedAreas(ctx, disk, snap.ID, "*")
	if err != nil {
		return err
	}
	src, rep, err := transport.Open(ctx, o.Order, env, disk, snap.ID)
	if err != nil {
		return err
	}
	defer src.Close()
	start := time.Now()
	var n atomic.Int64
	grp, gctx := errgroup.WithContext(ctx)
	grp.SetLimit(o.Workers)
	for _, a := range areas {
		for off := a.Start; off < a.Start+a.Length; off += 4 << 20 {
			size := min(4<<20, a.Start+a.Length-off)
			grp.Go(func() error {
				buf := make([]byte, size)
				n.Add(size)
				return src.ReadAt(gctx, buf, off)
			})
		}
	}
	if err := grp.Wait(); err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	res := readTestResult{Transport: rep.String(), Bytes: n.Load(), Seconds: el, MBps: float64(n.Load()) / el / 1e6}
	if g.JSON {
		return json.NewEncoder(out).Encode(res)
	}
	fmt.Fprintf(out, "%s\nread %s in %.2fs: %.0f MB/s\n", res.Transport, human(res.Bytes), res.Seconds, res.MBps)
	return nil
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

var demoCmd = &cobra.Command{
	Use:   "demo",
	Short: "Walk through the engine: disk, writes, snapshots, changed areas, NBD, consolidation",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runDemo(cmd.Context(), globals, cmd.OutOrStdout())
	},
}

func init() { rootCmd.AddCommand(demoCmd) }

// runDemo uses a disk named "demo" in the datastore, replacing an earlier one.
func runDemo(ctx context.Context, g globalOptions, out io.Writer) error {
	ds, err := disk.OpenDatastore(g.Datastore)
	if err != nil {
		return err
	}
	if err := ds.Delete("demo"); err != nil && !errors.Is(err, disk.ErrNotFound) {
		return err
	}
	h := host.New(ds)
	defer h.Close()
	fmt.Fprintf(out, "datastore %s\n", ds.Dir())
	d, err := h.Create("demo", 1<<30, disk.Options{})
	if err != nil {
		return err
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "\n== "+format+"\n", a...) }
	step("created 1 GiB thin disk %q; writing 3 MiB at 0 and 1 MiB at 512 MiB", "demo")
	if err := writePattern(d, 0, 3<<20, 1); err != nil {
		return err
	}
	if err := writePattern(d, 512<<20, 1<<20, 2); err != nil {
		return err
	}
	s1, err := d.CreateSnapshot("monday", "first backup point")
	if err != nil {
		return err
	}
	step("snapshot %s taken at change ID %s; writing 64 KiB at 100 MiB and zeroing 1 MiB at 512 MiB", s1.ID, s1.ChangeID)
	writePattern(d, 100<<20, 64<<10, 3)
	d.Zero(512<<20, 1<<20, true)
	s2, err := d.CreateSnapshot("tuesday", "second backup point")
	if err != nil {
		return err
	}
	if err := showChanges(d, s2.ID, cbt.Any, out, "allocated areas of "+s2.ID+" (a full backup reads these)"); err != nil {
		return err
	}
	if err := showChanges(d, s2.ID, s1.ChangeID, out, "changed areas of "+s2.ID+" since "+s1.ChangeID+" (an incremental reads these)"); err != nil {
		return err
	}
	if err := demoNBD(ctx, h, out); err != nil {
		return err
	}
	return demoConsolidate(ctx, d, s1.ID, out)
}

func writePattern(d *disk.Disk, off, n int64, b byte) error {
	_, err := d.WriteAt(bytes.Repeat([]byte{b}, int(n)), off)
	return err
}

func showChanges(d *disk.Disk, snap, since string, out io.Writer, title string) error {
	s, err := d.OpenSnapshot(snap)
	if err != nil {
		return err
	}
	defer s.Close()
	ca, err := s.ChangedAreas(0, since)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== %s\n", title)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "START\tLENGTH\t")
	for _, a := range ca.ChangedArea {
		fmt.Fprintf(tw, "%d\t%d\t\n", a.Start, a.Length)
	}
	return tw.Flush()
}

// demoNBD serves the datastore on a private unix socket and reads the
// snapshot back through our NBD client, as a backup proxy would.
func demoNBD(ctx context.Context, h *host.Host, out io.Writer) error {
	dir, err := os.MkdirTemp("", "blockwise-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := nbd.NewServer(h, nbd.ServerOptions{})
	go srv.Serve(l)
	defer srv.Shutdown(ctx)
	uri := "nbd+unix:///demo@tuesday?socket=" + sock
	c, err := nbd.Dial(ctx, uri, &nbd.ClientOptions{MetaContexts: []string{nbd.ContextBaseAllocation}})
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	if err := c.ReadAt(ctx, buf, 100<<20); err != nil {
		return err
	}
	ext, err := c.BlockStatus(ctx, nbd.ContextBaseAllocation, 0, c.Size(), false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== over NBD (%s): %d bytes, first data byte at 100 MiB = %d, %d allocation extents\n",
		uri, c.Size(), buf[0], len(ext))
	fmt.Fprintf(out, "   try: nbdinfo --map '%s' while `blockwise serve` runs\n", "nbd+unix:///demo@tuesday?socket=DATASTORE/nbd.sock")
	return nil
}

func demoConsolidate(ctx context.Context, d *disk.Disk, snap string, out io.Writer) error {
	task, err := d.DeleteSnapshot(snap)
	if err != nil {
		return err
	}
	writePattern(d, 200<<20, 4096, 9) // writes go on during consolidation
	if err := task.Wait(ctx); err != nil {
		return err
	}
	st, err := d.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== deleted snapshot %s online: %d layers left, %d snapshot(s), %d bytes allocated of %d, change ID %s\n",
		snap, st.Layers, len(st.Snapshots), st.Allocated, st.Size, st.ChangeID)
	return nil
}

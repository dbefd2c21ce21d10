package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/fileres"
)

var mountOpts filesOptions

var mountCmd = &cobra.Command{
	Use:   "mount ID|latest DIR",
	Short: "Mount a restore point's filesystems read-only (FUSE) at DIR until interrupted or unmounted",
	Long: `Mount a restore point read-only over FUSE, straight from the repository
(every chunk verified; a damaged one fails that read with EIO):

  blockwise mount latest --disk vm1 /mnt/vm1 &
  cp -a /mnt/vm1/part1/etc/nginx /etc/
  umount /mnt/vm1          # or Ctrl-C / SIGTERM the mount

DIR must be an empty directory that is not a mount point. The top level
holds the partitions (part1...), as blockwise ls shows them. The mount ends
with SIGINT or SIGTERM (it is unmounted first) or an outside umount.`,
	Args: args(2, 2),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runMount(cmd.Context(), mountOpts, a[0], a[1], cmd.OutOrStdout())
	},
}

func init() {
	addFilesFlags(mountCmd, &mountOpts)
	rootCmd.AddCommand(mountCmd)
}

func runMount(ctx context.Context, o filesOptions, ref, dir string, out io.Writer) error {
	r, s, err := o.openFiles(ctx, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	defer s.Close()
	return s.Mount(ctx, dir, fileres.MountOptions{
		Ready: func() {
			fmt.Fprintf(out, "mounted %s (%s) read-only at %s; interrupt or umount to end\n", s.Manifest.ID.Short(), s.Manifest.Disk, dir)
		},
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
}

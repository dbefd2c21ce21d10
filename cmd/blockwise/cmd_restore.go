package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

type restoreOptions struct {
	repoOptions
	transportOptions
	Disk     string
	ToFile   string
	ToDisk   string
	ToURI    string
	Rollback string
	Workers  int
	Verify   bool
	Include  []string
	CacheMiB int64
	NoClone  bool
	Scratch  string
	Drive    string
}

var restoreOpts restoreOptions

var restoreCmd = &cobra.Command{
	Use:   "restore ID|latest",
	Short: "Restore a restore point to a sparse raw file, a new disk, an NBD export or a running VM's drive (qemu+unix://, libvirt://, qemu+ssh://), or files from it (--include) into a directory, verified chunk by chunk",
	Long: `Restore a restore point, verified chunk by chunk, to one of:
  --to FILE        a sparse raw image file (zero chunks become holes)
  --to-disk NAME   a new disk on the host
  --to-uri NBD     an NBD export (nbd://, nbd+unix://, nbds://)
  --to-uri VM      a running VM's drive:
                     qemu+unix:///PATH/qmp.sock?drive=NAME       (QEMU's QMP socket)
                     libvirt:///system?domain=NAME&disk=vdb      (local libvirtd)
                     qemu+ssh://USER@HOST/system?domain=NAME&disk=vdb[&keyfile=PATH&known_hosts=PATH]
                   (--drive NAME chooses the drive too; the VM's other drives are
                   not touched). The VM is paused, the point written into an
                   overlay exported on QEMU's NBD server (over qemu+ssh:// made on
                   the libvirt host and forwarded through ssh), committed into the
                   drive, the whole drive hashed against the point's root, and the
                   VM resumed only if it was running.
  --rollback DISK  the point's own disk, rolled back in place
  --include PATH   files of the point, into the --to directory

A restore into a VM's drive records its steps in a state file (fsynced). If
blockwise is killed (SIGKILL, a crash) the next restore or backup of that VM
finishes or undoes it: killed before the overlay went over the drive, the
drive keeps its old content; after, the commit is finished and the drive
holds the whole point - never a mix. Its NBD export, overlay and block job
are removed, and the VM resumes only if it was running before.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRestore(cmd.Context(), globals, restoreOpts, args[0], cmd.OutOrStdout())
	},
}

func init() {
	addRepoFlags(restoreCmd, &restoreOpts.repoOptions)
	f := restoreCmd.Flags()
	f.StringVar(&restoreOpts.Disk, "disk", "", "with latest: the disk whose newest restore point to use")
	f.StringVar(&restoreOpts.ToFile, "to", "", "write a sparse raw image file (must not exist): zero chunks become holes; with --include, the directory to restore files into")
	f.StringArrayVar(&restoreOpts.Include, "include", nil, "restore `PATH` of the point (/part1/etc/nginx, as blockwise ls names it) with everything under it into the --to directory, at its full path; repeatable")
	f.Int64Var(&restoreOpts.CacheMiB, "cache-mib", 64, "with --include: MiB of decoded chunks kept in memory")
	f.StringVar(&restoreOpts.ToDisk, "to-disk", "", "create this disk on the host and write it over NBD (WRITE_ZEROES for zero chunks)")
	f.StringVar(&restoreOpts.ToURI, "to-uri", "", "write into an NBD export (nbd://, nbd+unix://, nbds://), or into a running VM's drive (qemu+unix:///PATH/qmp.sock?drive=NAME): the VM is paused, written, verified whole and resumed")
	f.StringVar(&restoreOpts.Scratch, "scratch-dir", "", "with --to-uri qemu+unix://, libvirt:// or qemu+ssh://: where the private directory for QEMU's NBD socket and the restore overlay is made, on QEMU's host (default the system's temp dir); QEMU must be able to write there. A restore's state file is kept here too (for qemu+ssh://, in this host's temp dir): the next restore or backup of the VM finishes or undoes a restore that was killed")
	f.StringVar(&restoreOpts.Drive, "drive", "", "with --to-uri: the VM's drive to write (node name or device id; libvirt: the disk's target, vda), the same as ?drive=NAME in the URI; the VM's other drives are not touched")
	f.StringVar(&restoreOpts.Rollback, "rollback", "", "roll this disk (the point's own, VM stopped) back in place, writing only what CBT says changed since the point")
	f.IntVar(&restoreOpts.Workers, "workers", 4, "concurrent chunk writes")
	f.BoolVar(&restoreOpts.Verify, "verify", false, "read every written chunk back from the target and compare, and hash the restored image against the point's root (chunks are always checked against their hash when read from the repository)")
	f.BoolVar(&restoreOpts.NoClone, "no-clone", false, "with --to-disk, do not start from a clone of the point's disk on the host (restore every chunk from the repository)")
	addTransportFlags(f, &restoreOpts.transportOptions)
	rootCmd.AddCommand(restoreCmd)
}

func runRestore(ctx context.Context, g globalOptions, o restoreOptions, ref string, out io.Writer) error {
	if len(o.Include) > 0 {
		return runRestoreFiles(ctx, g, o, ref, out)
	}
	if n := countSet(o.ToFile, o.ToDisk, o.ToURI, o.Rollback); n != 1 {
		return usageErrorf("give exactly one of --to, --to-disk, --to-uri and --rollback")
	}
	if sources.IsURI(o.ToFile) { // --to qemu+unix://...: the same as --to-uri
		o.ToURI, o.ToFile = o.ToFile, ""
	}
	r, m, err := o.openPoint(ctx, ref, o.Disk)
	if err != nil {
		return err
	}
	defer r.Close()
	if sources.IsURI(o.ToURI) {
		return runRestoreVM(ctx, g, o, r, m, out)
	}
	if o.Rollback != "" {
		return runRollback(ctx, g, o, r, m, out)
	}
	if o.ToDisk != "" && !o.NoClone {
		done, err := restoreByClone(ctx, g, o, r, m, out)
		if done || err != nil {
			return err
		}
	}
	target, isZero, err := openRestoreTarget(ctx, g, o, int64(m.Size), out)
	if err != nil {
		return err
	}
	defer target.Close()
	bar := newProgress(os.Stderr, "restore "+m.ID.Short())
	res, err := backup.Restore(ctx, backup.RestoreOptions{Repo: r, Manifest: m.ID, Target: target, TargetIsZero: isZero,
		Workers: o.Workers, ReadBack: o.Verify, Progress: bar.update})
	bar.finish()
	if err != nil {
		if o.ToFile != "" {
			// A partial image would look like a valid raw file.
			target.Close()
			os.Remove(o.ToFile)
		}
		return err
	}
	fmt.Fprintf(out, "restored %s (%s, %d bytes): ", m.ID.Short(), m.Disk, m.Size)
	printRestored(out, res, o.Verify)
	return nil
}

// restoreByClone restores --to-disk by cloning the point's disk on the
// host and writing only what changed since the point; done is false when
// the point's disk cannot be the base (the caller restores it whole).
func restoreByClone(ctx context.Context, g globalOptions, o restoreOptions, r *repo.Repository, m *repo.Manifest, out io.Writer) (bool, error) {
	env, err := o.transportOptions.env(g)
	if err != nil {
		return false, err
	}
	open := func(ctx context.Context) (backup.Target, func() error, error) {
		t, rep, err := transport.OpenTarget(ctx, o.Order, env, o.ToDisk)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(out, "%s\n", rep)
		return t, t.Close, nil
	}
	bar := newProgress(os.Stderr, "restore "+m.ID.Short())
	res, err := backup.RestoreByClone(ctx, backup.CloneRestoreOptions{Host: backup.ClientHost{C: env.Client}, Repo: r,
		Manifest: m.ID, ToDisk: o.ToDisk, OpenTarget: open, Workers: o.Workers, ReadBack: o.Verify, Progress: bar.update})
	bar.finish()
	if errors.Is(err, backup.ErrNoCloneBase) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	fmt.Fprintf(out, "restored %s (%s, %d bytes) by cloning %s on the host, then %d bytes changed since the point: ",
		m.ID.Short(), m.Disk, m.Size, m.Disk, res.ChangedBytes)
	printRestored(out, res.RestoreResult, o.Verify)
	return true, nil
}

// printRestored ends a restore's or a rollback's summary line.
func printRestored(out io.Writer, res *backup.RestoreResult, verify bool) {
	fmt.Fprintf(out, "%d bytes written, %d zero chunks, every chunk's hash checked", res.BytesWritten, res.ZeroSlots)
	if verify {
		fmt.Fprintf(out, ", %d chunks read back and compared", res.Verified)
		if res.RootVerified { // hashed on the target, or by the host's tree (rollback, clone)
			fmt.Fprint(out, ", the image's root equals the point's")
		}
	}
	fmt.Fprintf(out, ", %s\n", res.Duration.Round(1e6))
}

func countSet(s ...string) int {
	n := 0
	for _, x := range s {
		if x != "" {
			n++
		}
	}
	return n
}

// openRestoreTarget: --to-disk creates the disk on the host and writes it
// through the first transport that works; otherwise a file or a URI.
func openRestoreTarget(ctx context.Context, g globalOptions, o restoreOptions, size int64, out io.Writer) (transport.Target, bool, error) {
	if o.ToDisk == "" {
		return openTarget(ctx, o, size)
	}
	env, err := o.transportOptions.env(g)
	if err != nil {
		return nil, false, err
	}
	if _, err := env.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: o.ToDisk, Size: size}); err != nil {
		return nil, false, err
	}
	t, rep, err := transport.OpenTarget(ctx, o.Order, env, o.ToDisk)
	if err != nil {
		return nil, false, err
	}
	fmt.Fprintf(out, "%s\n", rep)
	return t, false, nil
}

func openTarget(ctx context.Context, o restoreOptions, size int64) (transport.Target, bool, error) {
	if o.ToFile != "" {
		t, err := transport.CreateFile(o.ToFile, size)
		if err != nil {
			return nil, false, err
		}
		return t, true, nil
	}
	t, err := transport.DialURI(ctx, o.ToURI, nil)
	if err != nil {
		return nil, false, err
	}
	return t, false, nil
}

// runRollback writes back into the point's own disk only what changed
// since the point.
func runRollback(ctx context.Context, g globalOptions, o restoreOptions, r *repo.Repository, m *repo.Manifest, out io.Writer) error {
	env, err := o.transportOptions.env(g)
	if err != nil {
		return err
	}
	target, rep, err := transport.OpenTarget(ctx, o.Order, env, o.Rollback)
	if err != nil {
		return err
	}
	defer target.Close()
	fmt.Fprintf(out, "%s\n", rep)
	bar := newProgress(os.Stderr, "rollback "+o.Rollback)
	res, err := backup.Rollback(ctx, backup.RollbackOptions{Host: backup.ClientHost{C: env.Client}, Disk: o.Rollback,
		Repo: r, Manifest: m.ID, Target: target, Workers: o.Workers, ReadBack: o.Verify, Progress: bar.update})
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "rolled %s back to %s: CBT reported %d bytes changed since; ", o.Rollback, m.ID.Short(), res.ChangedBytes)
	printRestored(out, res.RestoreResult, o.Verify)
	return nil
}

// runRestoreFiles restores the --include paths of a point into the --to
// directory (internal/fileres).
func runRestoreFiles(ctx context.Context, g globalOptions, o restoreOptions, ref string, out io.Writer) error {
	if o.ToFile == "" || countSet(o.ToDisk, o.ToURI, o.Rollback) != 0 {
		return usageErrorf("--include restores files into a directory: give --to DIR (and not --to-disk, --to-uri or --rollback)")
	}
	fo := filesOptions{repoOptions: o.repoOptions, Disk: o.Disk, CacheMiB: o.CacheMiB}
	r, s, err := fo.openFiles(ctx, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	defer s.Close()
	start := time.Now()
	st, err := s.Restore(ctx, o.Include, o.ToFile)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, st)
	}
	fmt.Fprintf(out, "restored %d files, %d directories, %d symlinks, %d hard links, %d special files (%d bytes of data) from %s into %s, every chunk's hash checked, %s\n",
		st.Files, st.Dirs, st.Symlinks, st.HardLinks, st.Special, st.Bytes, s.Manifest.ID.Short(), o.ToFile, time.Since(start).Round(time.Millisecond))
	if st.SkippedDevices > 0 {
		fmt.Fprintf(out, "%d device nodes not made: making them needs root\n", st.SkippedDevices)
	}
	if st.SkippedXattrs > 0 {
		fmt.Fprintf(out, "%d extended attributes not set (%d set): the target refused them (trusted.* and security.* need root)\n", st.SkippedXattrs, st.Xattrs)
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/repo"
)

// File-level restore: ls and dump browse a restore point's partitions and
// filesystems straight from the repository (internal/fileres).

type filesOptions struct {
	repoOptions
	Disk     string
	CacheMiB int64
}

func addFilesFlags(cmd *cobra.Command, o *filesOptions) {
	addRepoFlags(cmd, &o.repoOptions)
	cmd.Flags().StringVar(&o.Disk, "disk", "", "with latest: the disk whose newest restore point to use")
	cmd.Flags().Int64Var(&o.CacheMiB, "cache-mib", 64, "MiB of decoded chunks kept in memory while reading the point")
}

// openFiles opens a point for browsing; the caller closes both.
func (o filesOptions) openFiles(ctx context.Context, ref string) (*repo.Repository, *fileres.Session, error) {
	return o.openFilesDisk(ctx, ref, o.Disk)
}

func (o filesOptions) openFilesDisk(ctx context.Context, ref, disk string) (*repo.Repository, *fileres.Session, error) {
	r, m, err := o.openPoint(ctx, ref, disk)
	if err != nil {
		return nil, nil, err
	}
	s, err := fileres.OpenRepoPoint(ctx, r, m.ID, fileres.SourceOptions{CacheBytes: o.CacheMiB << 20})
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, s, nil
}

var lsOpts filesOptions

var lsCmd = &cobra.Command{
	Use:   "ls ID|latest [PATH]",
	Short: "List a restore point's partitions and files (/part1/etc/...) without restoring it",
	Long: `List a restore point's partitions and the files in their filesystems,
read straight from the repository (every chunk verified):

  blockwise ls latest --disk vm1                 # partitions and what is on them
  blockwise ls latest --disk vm1 /part1/etc      # a directory, ls -l style
  blockwise ls latest --disk vm1 /part2/vg0-root/home

Partitions are part1, part2...; a disk without a partition table is
"disk"; the logical volumes of an LVM2 physical volume are listed under its
partition as VG-LV. ext2/3/4 and FAT12/16/32 are read; anything else is
named and refused.`,
	Args: args(1, 2),
	RunE: func(cmd *cobra.Command, a []string) error {
		p := "/"
		if len(a) == 2 {
			p = a[1]
		}
		return runLs(cmd.Context(), globals, lsOpts, a[0], p, cmd.OutOrStdout())
	},
}

var dumpOpts filesOptions

var dumpCmd = &cobra.Command{
	Use:   "dump ID|latest PATH",
	Short: "Write a file of a restore point to stdout, or a directory as a tar stream",
	Long: `Write one file of a restore point to stdout, or a directory (with
everything under it) as a PAX tar stream, read straight from the repository:

  blockwise dump latest --disk vm1 /part1/etc/fstab
  blockwise dump latest --disk vm1 /part1/etc/nginx | tar -x -C /tmp/nginx`,
	Args: args(2, 2),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runDump(cmd.Context(), dumpOpts, a[0], a[1], cmd.OutOrStdout())
	},
}

func init() {
	addFilesFlags(lsCmd, &lsOpts)
	addFilesFlags(dumpCmd, &dumpOpts)
	rootCmd.AddCommand(lsCmd, dumpCmd)
}

// lsRow is one line of ls (and its --json form).
type lsRow struct {
	Name   string    `json:"name"`
	Mode   string    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Size   int64     `json:"size"`
	Mtime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty"` // a symlink's
	Desc   string    `json:"description,omitempty"`
	Error  string    `json:"error,omitempty"` // a volume that cannot be read
}

func runLs(ctx context.Context, g globalOptions, o filesOptions, ref, path string, out io.Writer) error {
	r, s, err := o.openFiles(ctx, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	defer s.Close()
	rows, err := lsRows(ctx, s.Point, path)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, rows)
	}
	var tbl [][]string
	for _, row := range rows {
		name := row.Name
		switch {
		case row.Target != "":
			name += " -> " + row.Target
		case row.Error != "":
			name += "  (" + row.Error + ")"
		case row.Desc != "":
			name += "  (" + row.Desc + ")"
		}
		tbl = append(tbl, []string{row.Mode, strconv.Itoa(int(row.UID)), strconv.Itoa(int(row.GID)),
			strconv.FormatInt(row.Size, 10), row.Mtime.UTC().Format("2006-01-02 15:04:05"), name})
	}
	return table(out, "MODE\tUID\tGID\tSIZE\tMODIFIED\tNAME", tbl)
}

// lsRows lists path: a directory's entries, or the one file.
func lsRows(ctx context.Context, p *fileres.Point, path string) ([]lsRow, error) {
	ref, err := p.Lookup(ctx, path)
	if err != nil {
		return nil, err
	}
	n, err := p.Stat(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !n.IsDir() {
		row, err := lsRowOf(ctx, p, fileres.Named{Name: fileres.ArchiveName(path), Ref: ref})
		return []lsRow{row}, err
	}
	ents, err := p.ReadDir(ctx, ref)
	if err != nil {
		return nil, err
	}
	rows := make([]lsRow, 0, len(ents))
	for _, e := range ents {
		row, err := lsRowOf(ctx, p, e)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func lsRowOf(ctx context.Context, p *fileres.Point, e fileres.Named) (lsRow, error) {
	ref := e.Ref
	if e.Volume != nil {
		ref = fileres.Ref{} // a volume is listed as what it is, whatever its filesystem says
	}
	n, err := p.Stat(ctx, ref)
	if err != nil {
		return lsRow{}, fmt.Errorf("%s: %w", e.Name, err)
	}
	row := lsRow{Name: e.Name, Mode: fileres.GoMode(n.Mode).String(), UID: n.Uid, GID: n.Gid, Size: n.Size, Mtime: n.Mtime}
	if v := e.Volume; v != nil {
		row.Desc, row.Size = v.Desc, v.Size
		if v.Err != nil {
			row.Error = v.Err.Error()
		}
	}
	if n.IsSymlink() {
		if row.Target, err = p.Readlink(ctx, e.Ref); err != nil {
			return lsRow{}, fmt.Errorf("%s: %w", e.Name, err)
		}
	}
	return row, nil
}

func runDump(ctx context.Context, o filesOptions, ref, path string, out io.Writer) error {
	r, s, err := o.openFiles(ctx, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	defer s.Close()
	return dumpPath(ctx, s.Point, path, out)
}

func dumpPath(ctx context.Context, p *fileres.Point, path string, out io.Writer) error {
	fr, err := p.Lookup(ctx, path)
	if err != nil {
		return err
	}
	n, err := p.Stat(ctx, fr)
	if err != nil {
		return err
	}
	switch {
	case n.IsDir():
		return p.WriteTar(ctx, out, fileres.ArchiveName(path), fr)
	case n.IsRegular():
		f, err := p.Open(ctx, fr)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(out, io.NewSectionReader(f, 0, n.Size), make([]byte, 1<<20))
		return err
	case n.IsSymlink():
		return usageErrorf("%s is a symlink (to %s): dump its target", path, mustLink(ctx, p, fr))
	}
	return usageErrorf("%s is a %v, not a file or directory", path, fileres.GoMode(n.Mode).Type())
}

func mustLink(ctx context.Context, p *fileres.Point, r fileres.Ref) string {
	t, err := p.Readlink(ctx, r)
	if err != nil {
		return "?"
	}
	return t
}

// repoPoints serves a repository's restore points to the API's file
// routes. It opens the repository for each request, so a request sees
// the backups committed since the last one.
type repoPoints struct{ o repoOptions }

// points is the --points-repo repository, nil without one.
func (o serveOptions) points() api.Points {
	if o.PointsRepo == "" {
		return nil
	}
	return repoPoints{o.pointsRepo()}
}

// pointsRepo is the --points-repo repository's options (also what the
// host's recoveries open).
func (o serveOptions) pointsRepo() repoOptions {
	return repoOptions{Repo: o.PointsRepo, PasswordFile: o.PointsPasswordFile, KeyFile: o.PointsKeyFile}
}

// List implements api.Points.
func (p repoPoints) List(ctx context.Context) ([]*repo.Manifest, error) {
	r, err := p.o.open(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	ms, err := r.ListManifests(ctx)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Time.Before(ms[j].Time) })
	return ms, err
}

// Open implements api.Points.
func (p repoPoints) Open(ctx context.Context, point, disk string) (*fileres.Session, func(), error) {
	r, s, err := filesOptions{repoOptions: p.o, CacheMiB: 64}.openFilesDisk(ctx, point, disk)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close(); r.Close() }, nil
}

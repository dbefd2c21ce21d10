package fileres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// RestoreStats counts what a restore wrote.
type RestoreStats struct {
	Files, Dirs, Symlinks, HardLinks, Special int64
	Bytes                                     int64 // file data written (holes not counted)
	// SkippedDevices are device nodes not made because the restore does
	// not run as root (mknod needs it); everything else was restored.
	SkippedDevices int64
	// Xattrs counts the extended attributes set; SkippedXattrs those the
	// target refused for want of privilege or support (trusted.* and
	// security.* need root, some filesystems take no user.* on
	// symlinks or no xattrs at all). Everything else was restored.
	Xattrs, SkippedXattrs int64
	// SkippedVolumes are volumes under an included path whose filesystem
	// cannot be read (Restore then fails with the first one's error,
	// after restoring everything else).
	SkippedVolumes []string
}

// Restore copies the point paths (and everything under them) into the
// directory to, each at its full path ("/part1/etc" becomes
// to/part1/etc), with modes, owners (when run as root), times, symlinks,
// hard links, device nodes and holes. Nothing is written outside to: the
// writes go through an os.Root, and names from the image are checked.
// An existing file is not overwritten (fs.ErrExist). Invariant F5.
func (p *Point) Restore(ctx context.Context, paths []string, to string) (RestoreStats, error) {
	var st RestoreStats
	if err := os.MkdirAll(to, 0o755); err != nil {
		return st, err
	}
	root, err := os.OpenRoot(to)
	if err != nil {
		return st, err
	}
	defer root.Close()
	rs := &restorer{p: p, root: root, links: map[Ref]string{}, st: &st}
	defer rs.close()
	for _, pth := range paths {
		names, err := SplitPath(pth)
		if err != nil {
			return st, err
		}
		ref, err := p.Lookup(ctx, pth)
		if err != nil {
			return st, err
		}
		rel := path.Join(names...)
		if rel == "" {
			rel = "."
		}
		if dir := path.Dir(rel); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return st, err
			}
		}
		if err := p.Walk(ctx, rel, ref, rs.pre, rs.post); err != nil {
			return st, err
		}
	}
	if rs.skipErr != nil {
		return st, fmt.Errorf("restored all but %d volume(s): %w", len(st.SkippedVolumes), rs.skipErr)
	}
	return st, nil
}

type restorer struct {
	p     *Point
	root  *os.Root
	links map[Ref]string // first restored path of each multiply linked file
	st    *RestoreStats
	// dir is the last parent directory opened for the *at calls, kept
	// open while its entries are restored one after another.
	dir     *os.File
	dirPath string
	skipErr error // the first unreadable volume's
}

func (rs *restorer) pre(rel string, r Ref, n Node) error {
	ctx := context.Background()
	if v := r.Vol; v != nil && v.Err != nil && r.synthetic() && len(v.Sub) == 0 {
		// A volume whose filesystem cannot be read: the rest of the
		// include is restored, and Restore fails at the end naming it.
		rs.st.SkippedVolumes = append(rs.st.SkippedVolumes, v.Path)
		if rs.skipErr == nil {
			rs.skipErr = v.Err
		}
		return ErrSkipDir
	}
	switch {
	case n.IsDir():
		// An existing directory is merged into (an --include of both a
		// directory and a file in it).
		if err := rs.root.Mkdir(rel, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		rs.st.Dirs++
		return nil // metadata after its entries (post)
	case n.IsRegular() && n.Nlink > 1 && rs.links[r] != "":
		rs.st.HardLinks++
		return rs.root.Link(rs.links[r], rel)
	case n.IsRegular():
		if err := rs.file(ctx, rel, r, n); err != nil {
			return err
		}
		if n.Nlink > 1 {
			rs.links[r] = rel
		}
	case n.IsSymlink():
		tgt, err := rs.p.Readlink(ctx, r)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := rs.root.Symlink(tgt, rel); err != nil {
			return err
		}
		rs.st.Symlinks++
	default:
		if t := n.Mode & ModeType; (t == ModeChar || t == ModeBlock) && os.Geteuid() != 0 {
			rs.st.SkippedDevices++
			return nil
		}
		if err := rs.special(rel, n); err != nil {
			return err
		}
	}
	return rs.meta(ctx, rel, r, n)
}

func (rs *restorer) post(rel string, r Ref, n Node) error {
	if r.synthetic() {
		return nil // part1 and the like: no metadata of their own
	}
	return rs.meta(context.Background(), rel, r, n)
}

// file writes a regular file's data stretches, leaving holes as holes.
func (rs *restorer) file(ctx context.Context, rel string, r Ref, n Node) error {
	src, err := rs.p.Open(ctx, r)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	f, err := rs.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := CopyData(ctx, src, f)
	rs.st.Bytes += w
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := f.Truncate(n.Size); err != nil {
		return err
	}
	rs.st.Files++
	return f.Close()
}

// special makes a device node, FIFO or socket in its parent directory.
func (rs *restorer) special(rel string, n Node) error {
	return rs.inParent(rel, func(fd int, name string) error {
		if err := unix.Mknodat(fd, name, n.Mode, int(n.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: rel, Err: err}
		}
		rs.st.Special++
		return nil
	})
}

// inParent calls fn with an open descriptor of rel's parent (inside the
// root) and rel's last name, for the *at calls os.Root does not offer.
func (rs *restorer) inParent(rel string, fn func(fd int, name string) error) error {
	dir := filepath.Dir(rel)
	if rs.dir == nil || rs.dirPath != dir {
		rs.close()
		d, err := rs.root.Open(dir)
		if err != nil {
			return err
		}
		rs.dir, rs.dirPath = d, dir
	}
	return fn(int(rs.dir.Fd()), filepath.Base(rel))
}

func (rs *restorer) close() {
	if rs.dir != nil {
		rs.dir.Close()
		rs.dir = nil
	}
}

// meta sets owner (as root), extended attributes, mode and times without
// following a symlink; chown first, as it clears set-id bits, and the
// attributes before the mode, which may forbid writing them.
func (rs *restorer) meta(ctx context.Context, rel string, r Ref, n Node) error {
	if rel == "." {
		return nil
	}
	xs, err := rs.p.Xattrs(ctx, r)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return rs.inParent(rel, func(fd int, name string) error {
		if os.Geteuid() == 0 {
			if err := unix.Fchownat(fd, name, int(n.Uid), int(n.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return &fs.PathError{Op: "chown", Path: rel, Err: err}
			}
		}
		if err := rs.xattrs(fd, name, rel, xs); err != nil {
			return err
		}
		if !n.IsSymlink() {
			if err := unix.Fchmodat(fd, name, n.Mode&0o7777, 0); err != nil {
				return &fs.PathError{Op: "chmod", Path: rel, Err: err}
			}
		}
		ts := []unix.Timespec{timespec(n.Atime), timespec(n.Mtime)}
		if err := unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &fs.PathError{Op: "utimes", Path: rel, Err: err}
		}
		return nil
	})
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// xattrs sets a restored file's extended attributes. lsetxattr has no
// *at form: the name is reached through the parent's descriptor
// (/proc/self/fd/N/NAME, one component, the last one not followed), so
// it cannot land outside the target directory (F5).
func (rs *restorer) xattrs(fd int, name, rel string, xs []Xattr) error {
	p := fmt.Sprintf("/proc/self/fd/%d/%s", fd, name)
	for _, x := range xs {
		err := unix.Lsetxattr(p, x.Name, x.Value, 0)
		switch {
		case err == nil:
			rs.st.Xattrs++
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP):
			rs.st.SkippedXattrs++
		default:
			return &fs.PathError{Op: "setxattr " + x.Name, Path: rel, Err: err}
		}
	}
	return nil
}

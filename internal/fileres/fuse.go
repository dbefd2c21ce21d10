package fileres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions tune a mount.
type MountOptions struct {
	Ready func()       // called once the mount is live
	Log   *slog.Logger // hears of reads that failed (a damaged chunk or filesystem); nil: none
}

// Mount serves p read-only over FUSE at dir (an empty directory that is
// no mount point, else ErrMountBusy) until ctx ends or the filesystem is
// unmounted from outside; it unmounts before returning.
func (p *Point) Mount(ctx context.Context, dir string, o MountOptions) error {
	if err := checkMountPoint(dir); err != nil {
		return err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	m := &mounted{p: p, vols: map[*Volume]uint64{}, log: o.Log}
	m.number(p.Volumes)
	root := &fuseNode{m: m}
	timeout := time.Hour // the tree never changes
	srv, err := fs.Mount(dir, root, &fs.Options{
		EntryTimeout: &timeout, AttrTimeout: &timeout, NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "blockwise", Name: "blockwise",
			Options: []string{"ro"}, MaxReadAhead: 1 << 20},
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	if o.Ready != nil {
		o.Ready()
	}
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	for i := 0; ; i++ {
		err := srv.Unmount()
		if err == nil || i == 50 {
			<-done
			return err
		}
		time.Sleep(100 * time.Millisecond) // busy: a reader still has a file open
	}
}

// checkMountPoint refuses a path that is not an empty directory, or is
// already a mount point (its device differs from its parent's).
func checkMountPoint(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory: %w", dir, ErrMountBusy)
	}
	parent, err := os.Stat(filepath.Join(dir, ".."))
	if err != nil {
		return err
	}
	if fi.Sys().(*syscall.Stat_t).Dev != parent.Sys().(*syscall.Stat_t).Dev {
		return fmt.Errorf("%s is already a mount point: %w", dir, ErrMountBusy)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); !errors.Is(err, io.EOF) {
		return fmt.Errorf("mount point %s is not empty: %w", dir, ErrMountBusy)
	}
	return nil
}

// mounted numbers the volumes, so each file's inode number is unique in
// the mount: the volume's number in the top 16 bits.
type mounted struct {
	p    *Point
	vols map[*Volume]uint64
	log  *slog.Logger
}

// errno maps err for the reader and logs what it hides: the reader sees
// EIO, the log says which chunk or structure was bad.
func (m *mounted) errno(op string, r Ref, err error) syscall.Errno {
	e := errno(err)
	if e == syscall.EIO {
		vol := ""
		if r.Vol != nil {
			vol = r.Vol.Path
		}
		m.log.Error("mount: read failed", "op", op, "volume", vol, "inode", r.Ino, "err", err)
	}
	return e
}

func (m *mounted) number(vs []*Volume) {
	for _, v := range vs {
		m.vols[v] = uint64(len(m.vols) + 1)
		m.number(v.Sub)
	}
}

func (m *mounted) ino(r Ref) uint64 {
	if r.Vol == nil {
		return 1
	}
	return m.vols[r.Vol]<<48 | r.Ino&(1<<48-1)
}

type fuseNode struct {
	fs.Inode
	m   *mounted
	ref Ref
}

var (
	_ fs.NodeLookuper    = (*fuseNode)(nil)
	_ fs.NodeReaddirer   = (*fuseNode)(nil)
	_ fs.NodeGetattrer   = (*fuseNode)(nil)
	_ fs.NodeOpener      = (*fuseNode)(nil)
	_ fs.NodeReader      = (*fuseNode)(nil)
	_ fs.NodeReadlinker  = (*fuseNode)(nil)
	_ fs.NodeGetxattrer  = (*fuseNode)(nil)
	_ fs.NodeListxattrer = (*fuseNode)(nil)
)

// errno maps an error to what a reader of the mount sees; the cause is
// what ls, dump and restore report.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, ErrUnsupported):
		return syscall.EOPNOTSUPP
	}
	return syscall.EIO
}

func (n *fuseNode) fill(nd Node, ino uint64, a *fuse.Attr) {
	a.Ino, a.Mode, a.Size, a.Nlink, a.Uid, a.Gid = ino, nd.Mode, uint64(nd.Size), nd.Nlink, nd.Uid, nd.Gid
	a.Rdev = uint32(nd.Rdev)
	a.Blocks = (uint64(nd.Size) + 511) / 512
	a.SetTimes(&nd.Atime, &nd.Mtime, &nd.Ctime)
}

// Getattr implements fs.NodeGetattrer.
func (n *fuseNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	nd, err := n.m.p.Stat(ctx, n.ref)
	if err != nil {
		return n.m.errno("getattr", n.ref, err)
	}
	n.fill(nd, n.m.ino(n.ref), &out.Attr)
	return 0
}

// Lookup implements fs.NodeLookuper.
func (n *fuseNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ref, err := n.m.p.child(ctx, n.ref, name)
	if err != nil {
		return nil, n.m.errno("lookup", n.ref, err)
	}
	nd, err := n.m.p.Stat(ctx, ref)
	if err != nil {
		return nil, n.m.errno("lookup", n.ref, err)
	}
	ino := n.m.ino(ref)
	n.fill(nd, ino, &out.Attr)
	child := &fuseNode{m: n.m, ref: ref}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: nd.Mode & ModeType, Ino: ino}), 0
}

// Readdir implements fs.NodeReaddirer.
func (n *fuseNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.m.p.ReadDir(ctx, n.ref)
	if err != nil {
		return nil, n.m.errno("readdir", n.ref, err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		nd, err := n.m.p.Stat(ctx, e.Ref)
		if err != nil {
			return nil, n.m.errno("readdir", n.ref, err)
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: n.m.ino(e.Ref), Mode: nd.Mode & ModeType})
	}
	return fs.NewListDirStream(out), 0
}

// fuseFile is an open regular file.
type fuseFile struct{ f File }

// Open implements fs.NodeOpener: read-only, kept in the page cache (the point never changes).
func (n *fuseNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	f, err := n.m.p.Open(ctx, n.ref)
	if err != nil {
		return nil, 0, n.m.errno("open", n.ref, err)
	}
	return &fuseFile{f}, fuse.FOPEN_KEEP_CACHE, 0
}

// Read implements fs.NodeReader.
func (n *fuseNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ff, ok := fh.(*fuseFile)
	if !ok {
		return nil, syscall.EBADF
	}
	k, err := ff.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, n.m.errno("read", n.ref, err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// Readlink implements fs.NodeReadlinker.
func (n *fuseNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.m.p.Readlink(ctx, n.ref)
	if err != nil {
		return nil, n.m.errno("readlink", n.ref, err)
	}
	return []byte(t), 0
}

// Getxattr implements fs.NodeGetxattrer: a value, or its size when dest
// is too small (ERANGE), as getxattr(2) wants.
func (n *fuseNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	xs, err := n.m.p.Xattrs(ctx, n.ref)
	if err != nil {
		return 0, n.m.errno("getxattr", n.ref, err)
	}
	for _, x := range xs {
		if x.Name == attr {
			if len(x.Value) > len(dest) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

// Listxattr implements fs.NodeListxattrer: the names, each ended by NUL.
func (n *fuseNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	xs, err := n.m.p.Xattrs(ctx, n.ref)
	if err != nil {
		return 0, n.m.errno("listxattr", n.ref, err)
	}
	var names []byte
	for _, x := range xs {
		names = append(append(names, x.Name...), 0)
	}
	if len(names) > len(dest) {
		return uint32(len(names)), syscall.ERANGE
	}
	return uint32(copy(dest, names)), 0
}

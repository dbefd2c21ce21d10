package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Workspace is where a restore into a drive keeps its private directory
// (the overlay image and QEMU's NBD socket): on QEMU's host, which is
// this one for a QMP socket and the libvirt host over qemu+ssh://.
type Workspace interface {
	// MakeDir makes a new private directory QEMU can use.
	MakeDir(ctx context.Context) (string, error)
	// CreateImage creates an empty qcow2 image of size bytes in it.
	CreateImage(ctx context.Context, path string, size int64) error
	// Forward makes QEMU's NBD socket reachable here: the local socket
	// and how to stop the forward.
	Forward(ctx context.Context, sock string) (local string, stop func(), err error)
	// RemoveDir removes a directory MakeDir made, with what is in it.
	RemoveDir(dir string) error
}

// localWorkspace is a directory under Scratch on this host, owned by the
// user QEMU runs as (the owner of its QMP socket).
type localWorkspace struct{ scratch, socket string }

// MakeDir implements Workspace: a 0700 directory QEMU's user owns.
func (w localWorkspace) MakeDir(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp(w.scratch, intoPrefix)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(w.socket); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
				os.Remove(dir)
				return "", err
			}
		}
	}
	return dir, nil
}

// CreateImage implements Workspace with qemu-img, the image owned as its
// directory.
func (w localWorkspace) CreateImage(ctx context.Context, path string, size int64) error {
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatInt(size, 10)).CombinedOutput(); err != nil {
		return fmt.Errorf("create the restore overlay: %v: %s", err, out)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		os.Chown(path, int(st.Uid), int(st.Gid))
	}
	return nil
}

// Forward implements Workspace: the socket is already here.
func (localWorkspace) Forward(ctx context.Context, sock string) (string, func(), error) {
	return sock, func() {}, nil
}

// RemoveDir implements Workspace.
func (localWorkspace) RemoveDir(dir string) error {
	if dir == "" {
		return nil
	}
	return os.RemoveAll(dir)
}

func (s *Source) workspace() Workspace {
	if s.o.Workspace != nil {
		return s.o.Workspace
	}
	return localWorkspace{scratch: s.o.Scratch, socket: s.o.Socket}
}

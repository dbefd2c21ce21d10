package fsutil

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// ListenUnix listens on a unix socket at path that nobody but its owner
// (and group gid, unless it is -1) can ever connect to: the socket is
// bound in a fresh 0700 directory beside path, given mode and group
// there, then renamed into place. Chmod after listening at path would
// leave a moment in which the umask decides who connects, and the umask
// is process-wide. A stale socket at path is replaced; Close removes it.
func ListenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".sock")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// A short name: sun_path holds 108 bytes and tmp adds a few.
	bound := filepath.Join(tmp, "s")
	if len(bound) > 107 {
		return nil, fmt.Errorf("listen %s: socket path too long", path)
	}
	l, err := net.Listen("unix", bound)
	if err != nil {
		return nil, err
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the bound name is gone after the rename
	if err := private(bound, path, mode, gid); err != nil {
		ul.Close()
		return nil, err
	}
	return &unixListener{UnixListener: ul, path: path}, nil
}

func private(bound, path string, mode os.FileMode, gid int) error {
	if gid >= 0 {
		if err := os.Chown(bound, -1, gid); err != nil {
			return err
		}
	}
	if err := os.Chmod(bound, mode); err != nil {
		return err
	}
	return os.Rename(bound, path)
}

// unixListener removes its socket file on Close.
type unixListener struct {
	*net.UnixListener
	path string
}

// Close implements io.Closer.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	os.Remove(l.path)
	return err
}

// Addr reports the final path, not the name the socket was bound to.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

package vfs

import (
	"io"
	"io/fs"
	"os"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// Default is the operating system's file system; its Files are *os.File.
var Default FS = osFS{}

// osFS passes every call to the os package.
type osFS struct{}

var _ FS = osFS{}

// OpenFile opens a file with os.OpenFile.
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return f, nil
}

// OpenDir opens a directory (for fsyncing it).
func (osFS) OpenDir(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Rename is os.Rename.
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove is os.Remove.
func (osFS) Remove(name string) error { return os.Remove(name) }

// RemoveAll is os.RemoveAll.
func (osFS) RemoveAll(name string) error { return os.RemoveAll(name) }

// Mkdir is os.Mkdir.
func (osFS) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }

// MkdirAll is os.MkdirAll.
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }

// ReadDir is os.ReadDir.
func (osFS) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }

// Stat is os.Stat.
func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }

// ReadFile is os.ReadFile.
func (osFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// Lock takes an exclusive flock on name, released by Close.
func (osFS) Lock(name string) (io.Closer, error) {
	f, err := fsutil.Lock(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Link implements Linker.
func (osFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

package vfs

import (
	"io"
	"io/fs"
	"os"
)

// File is an open file. *os.File satisfies it.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Closer
	// Sync makes the file's data and size durable (fsync).
	Sync() error
	// Truncate changes the file's size; the change is durable after Sync.
	Truncate(size int64) error
	// Stat describes the file.
	Stat() (fs.FileInfo, error)
	// Name is the name the file was opened with.
	Name() string
}

// FS is a file system. Names are paths as the os package takes them.
type FS interface {
	// OpenFile opens name with os.OpenFile's flags (O_RDWR, O_CREATE,
	// O_EXCL, O_TRUNC are the ones the engine uses).
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// OpenDir opens a directory so that its Sync makes the entries in it
	// durable.
	OpenDir(name string) (File, error)
	// Rename replaces newname with oldname; durable after SyncDir.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes name and everything below it.
	RemoveAll(name string) error
	// Mkdir makes a directory; an existing one fails with fs.ErrExist.
	Mkdir(name string, perm fs.FileMode) error
	// MkdirAll makes a directory and its missing parents.
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists a directory sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// Stat describes a file.
	Stat(name string) (fs.FileInfo, error)
	// Lock takes an exclusive lock on name (created if missing) that
	// holds until the returned Closer is closed; a held lock fails with
	// fsutil.ErrLocked.
	Lock(name string) (io.Closer, error)
}

// Open opens name read-only.
func Open(fsys FS, name string) (File, error) {
	return fsys.OpenFile(name, os.O_RDONLY, 0)
}

// ReadFile reads the whole of name.
func ReadFile(fsys FS, name string) ([]byte, error) {
	if r, ok := fsys.(interface {
		ReadFile(string) ([]byte, error)
	}); ok {
		return r.ReadFile(name)
	}
	f, err := Open(fsys, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

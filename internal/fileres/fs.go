package fileres

import (
	"context"
	"io"
	"time"
)

// Unix file type bits of Node.Mode (as in stat(2)).
const (
	ModeType    = 0o170000
	ModeDir     = 0o040000
	ModeRegular = 0o100000
	ModeSymlink = 0o120000
	ModeFIFO    = 0o010000
	ModeChar    = 0o020000
	ModeBlock   = 0o060000
	ModeSocket  = 0o140000
)

// Node is one file's metadata as the filesystem stores it.
type Node struct {
	Ino                 uint64 // unique within its filesystem; hard links share it
	Mode                uint32 // type and permission bits, as st_mode
	Uid, Gid            uint32
	Size                int64
	Nlink               uint32
	Rdev                uint64 // a device node's number, as unix.Mkdev makes it
	Atime, Mtime, Ctime time.Time
}

// IsDir reports whether n is a directory.
func (n Node) IsDir() bool { return n.Mode&ModeType == ModeDir }

// IsRegular reports whether n is a regular file.
func (n Node) IsRegular() bool { return n.Mode&ModeType == ModeRegular }

// IsSymlink reports whether n is a symbolic link.
func (n Node) IsSymlink() bool { return n.Mode&ModeType == ModeSymlink }

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Ino  uint64
}

// Extent is a stretch of a file that holds data; the rest of the file up
// to its size reads as zeros (holes of a sparse file).
type Extent struct {
	Off, Len int64
}

// File is an open regular file (or symlink body).
type File interface {
	io.ReaderAt
	// Extents lists the file's data stretches in order.
	Extents(ctx context.Context) ([]Extent, error)
	Size() int64
}

// FS is a read-only filesystem found in a point. Every method checks the
// image's bytes and fails with ErrDamaged rather than trusting them.
type FS interface {
	Type() string
	Root() uint64
	Stat(ctx context.Context, ino uint64) (Node, error)
	ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error)
	Open(ctx context.Context, ino uint64) (File, error)
	Readlink(ctx context.Context, ino uint64) (string, error)
}

// maxSymlink bounds a symlink target read from an image.
const maxSymlink = 4096

// maxDirBytes bounds the directory contents read at once (F2) (ext4 large
// directories reach a few hundred MiB only with millions of names).
const maxDirBytes = 256 << 20

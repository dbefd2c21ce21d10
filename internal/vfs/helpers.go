package vfs

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// Datasync makes f's data durable: fdatasync on an operating-system file
// (it skips metadata a read does not need), Sync on any other.
func Datasync(f File) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.Datasync(of)
	}
	return f.Sync()
}

// SyncDir makes the entries of directory dir (creations, renames,
// removals) durable.
func SyncDir(fsys FS, dir string) error {
	d, err := fsys.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteAtomic replaces path with data so that after a crash the file holds
// either the old or the new content: temp file, fsync, rename, fsync dir.
func WriteAtomic(fsys FS, path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := createTemp(fsys, dir, "."+filepath.Base(path)+".tmp")
	if err != nil {
		return err
	}
	defer fsys.Remove(tmp.Name()) // fails harmlessly after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := Datasync(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(fsys, dir)
}

// createTemp creates a new file named prefix plus a random number in dir,
// as os.CreateTemp does.
func createTemp(fsys FS, dir, prefix string) (File, error) {
	for range 10000 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, prefix+"*"), Err: fs.ErrExist}
}

// WriteNew creates path (which must not exist, or is a leftover that gets
// replaced), writes data and syncs it, without syncing the directory: the
// caller syncs the directory once for a batch of new files.
func WriteNew(fsys FS, path string, data []byte) error {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := Datasync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// PunchHole makes [off, off+length) of f read as zeroes without changing
// its size: fallocate(PUNCH_HOLE) on an operating-system file (which also
// frees the space), zeroes written below the file's end on any other.
func PunchHole(f File, off, length int64) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.PunchHole(of, off, length)
	}
	return zeroBelowEnd(f, off, length)
}

// Preallocate allocates [off, off+length) of f without changing its size
// (fsutil.Preallocate) on an operating-system file; any other File fails
// with errors.ErrUnsupported.
func Preallocate(f File, off, length int64) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.Preallocate(of, off, length)
	}
	return errors.ErrUnsupported
}

// ZeroRange makes [off, off+length) of f read as zeroes, keeping it
// allocated on an operating-system file (fsutil.ZeroRange).
func ZeroRange(f File, off, length int64) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.ZeroRange(of, off, length)
	}
	return zeroBelowEnd(f, off, length)
}

// zeroBelowEnd writes zeroes over the part of [off, off+length) below f's
// end (past it reads as zeroes already), as fallocate's KEEP_SIZE does.
func zeroBelowEnd(f File, off, length int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if end := min(off+length, fi.Size()); end > off {
		return fsutil.WriteZeroes(f, off, end-off)
	}
	return nil
}

// Extents lists data and hole runs of f within [off, off+length) with
// SEEK_DATA/SEEK_HOLE on an operating-system file. Any other File reports
// data up to its end and a hole past it: never a hole where data may be.
func Extents(f File, off, length int64) ([]fsutil.Extent, error) {
	if of, ok := f.(*os.File); ok {
		return fsutil.Extents(of, off, length)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var out []fsutil.Extent
	end, size := off+length, fi.Size()
	if a := min(end, size); a > off {
		out = append(out, fsutil.Extent{Off: off, Len: a - off, Data: true})
		off = a
	}
	if end > off {
		out = append(out, fsutil.Extent{Off: off, Len: end - off, Data: false})
	}
	return out, nil
}

// Allocated is the space f occupies: its allocated blocks where the file
// system reports them (st_blocks), else its size.
func Allocated(f File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512, nil
	}
	return fi.Size(), nil
}

// MapRead maps [off, off+n) of f read-only (fsutil.MapRead) when f is an
// operating-system file; for any other it returns nil, nil and the caller
// reads instead.
func MapRead(f File, off, n int64) (*fsutil.Mapping, error) {
	if of, ok := f.(*os.File); ok {
		return fsutil.MapRead(of, off, n)
	}
	return nil, nil
}

// MkdirAllSync is MkdirAll that also makes each directory it creates
// durable, by syncing the directory that holds it: a directory created by
// MkdirAll alone may vanish in a power loss with everything in it, though
// its files were synced.
func MkdirAllSync(fsys FS, dir string, perm fs.FileMode) error {
	var made []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := fsys.Stat(p); err == nil || !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			break
		}
		made = append(made, p)
	}
	if err := fsys.MkdirAll(dir, perm); err != nil {
		return err
	}
	for _, p := range made { // deepest first; each parent exists now
		if err := SyncDir(fsys, filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// Reflink shares src's extents of [srcOff, srcOff+n) at dstOff of dst
// (fsutil.Reflink) between operating-system files; anything else is
// fsutil.ErrNoReflink.
func Reflink(dst, src File, srcOff, dstOff, n int64) error {
	d, s, ok := osFiles(dst, src)
	if !ok {
		return fsutil.ErrNoReflink
	}
	return fsutil.Reflink(d, s, srcOff, dstOff, n)
}

// osFiles is dst and src as operating-system files, if both are.
func osFiles(dst, src File) (*os.File, *os.File, bool) {
	d, ok1 := dst.(*os.File)
	s, ok2 := src.(*os.File)
	return d, s, ok1 && ok2
}

// CopyRange copies in the kernel (fsutil.CopyRange) between
// operating-system files; anything else is errors.ErrUnsupported.
func CopyRange(dst, src File, srcOff, dstOff, n int64) error {
	d, s, ok := osFiles(dst, src)
	if !ok {
		return errors.ErrUnsupported
	}
	return fsutil.CopyRange(d, s, srcOff, dstOff, n)
}

// ZeroRangeFast zeroes keeping the range allocated without writing
// zeroes (fsutil.ZeroRangeFast) on an operating-system file; any other
// is errors.ErrUnsupported, nothing changed.
func ZeroRangeFast(f File, off, length int64) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.ZeroRangeFast(of, off, length)
	}
	return errors.ErrUnsupported
}

// Reserve allocates [off, off+length) below f's size (fsutil.Reserve) on
// an operating-system file; any other is errors.ErrUnsupported.
func Reserve(f File, off, length int64, written bool) (bool, error) {
	if of, ok := f.(*os.File); ok {
		return fsutil.Reserve(of, off, length, written)
	}
	return false, errors.ErrUnsupported
}

// BlockSize is the file system's block size under f (4096 off the OS).
func BlockSize(f File) int64 {
	if of, ok := f.(*os.File); ok {
		return fsutil.BlockSize(of)
	}
	return 4096
}

// Links is how many directory entries name f (1 where unknown).
func Links(f File) uint64 {
	fi, err := f.Stat()
	if err != nil {
		return 1
	}
	return fsutil.Links(fi)
}

// Linker is an FS that can make hard links.
type Linker interface {
	// Link makes newname another name of oldname's file.
	Link(oldname, newname string) error
}

// Link makes newname a hard link to oldname where fsys can
// (errors.ErrUnsupported where it cannot).
func Link(fsys FS, oldname, newname string) error {
	if l, ok := fsys.(Linker); ok {
		return l.Link(oldname, newname)
	}
	return errors.ErrUnsupported
}

// Native reports whether f is an operating-system file, on which the
// fallocate, reflink and copy_file_range fast paths can work.
func Native(f File) bool {
	_, ok := f.(*os.File)
	return ok
}

// ReadNoWait reads like ReadAt (bytes past the end read as zeroes) but
// only what is in the page cache (fsutil.ReadNoWait): fsutil.ErrWouldBlock
// when reading would wait for the device, errors.ErrUnsupported on a File
// that is not the operating system's (a caller then reads the slow way).
func ReadNoWait(f File, p []byte, off int64) error {
	if of, ok := f.(*os.File); ok {
		return fsutil.ReadNoWait(of, p, off)
	}
	return errors.ErrUnsupported
}

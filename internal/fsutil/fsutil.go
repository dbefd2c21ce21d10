package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("fsutil: locked by another process")

// WriteAtomic replaces path with data so that after a crash the file holds
// either the old or the new content: temp file, fsync, rename, fsync dir.
func WriteAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := unix.Fdatasync(int(tmp.Fd())); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes directory entries (creations, renames, removals) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Datasync flushes a file's data and the metadata needed to read it back.
func Datasync(f *os.File) error {
	return unix.Fdatasync(int(f.Fd()))
}

// PunchHole deallocates [off, off+length) of f; the range then reads as
// zeroes. Partial file-system blocks at the edges are zeroed by the kernel.
func PunchHole(f *os.File, off, length int64) error {
	if length <= 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err != nil {
		return fmt.Errorf("punch hole: %w", err)
	}
	return nil
}

// Preallocate allocates [off, off+length) of f without changing its size
// (fallocate with FALLOC_FL_KEEP_SIZE), so later writes there need no new
// blocks. A file system that cannot fails with errors.ErrUnsupported.
func Preallocate(f *os.File, off, length int64) error {
	if length <= 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("preallocate: %w (%w)", errors.ErrUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("preallocate: %w", err)
	}
	return nil
}

// ZeroRange makes [off, off+length) read as zeroes while keeping it
// allocated, falling back to writing zeroes where the file system cannot.
func ZeroRange(f *os.File, off, length int64) error {
	if length <= 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil {
		return nil
	}
	return WriteZeroes(f, off, length)
}

var zeroBuf = make([]byte, 1<<20)

// WriteZeroes writes literal zeroes.
func WriteZeroes(f io.WriterAt, off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroBuf)))
		if _, err := f.WriteAt(zeroBuf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Extent is a run of a file that is either data or a hole.
type Extent struct {
	Off, Len int64
	Data     bool
}

// Extents lists data and hole runs of f within [off, off+length) using
// SEEK_DATA/SEEK_HOLE. Beyond the file's end counts as hole.
func Extents(f *os.File, off, length int64) ([]Extent, error) {
	end := off + length
	var out []Extent
	fd := int(f.Fd())
	for off < end {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // no data after off
				out = append(out, Extent{off, end - off, false})
				return out, nil
			}
			return nil, fmt.Errorf("seek data: %w", err)
		}
		if data > off {
			h := min(data, end)
			out = append(out, Extent{off, h - off, false})
			off = h
			if off >= end {
				break
			}
		}
		hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole: %w", err)
		}
		h := min(hole, end)
		out = append(out, Extent{off, h - off, true})
		off = h
	}
	return out, nil
}

// ReadFull reads len(p) bytes at off; bytes beyond the end of f read as zero.
func ReadFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return err
}

// Lock takes an exclusive advisory lock on path (created if missing) and
// returns the open file holding it; closing the file releases the lock.
func Lock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return f, nil
}

// WriteNew creates path (which must not exist, or is a leftover that gets
// replaced), writes data and syncs it, without syncing the directory: the
// caller syncs the directory once for a batch of new files.
func WriteNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

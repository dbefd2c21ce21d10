package fsutil

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoReflink: the file system cannot share extents between these files
// (no FICLONERANGE: ext4, tmpfs; another file system; a misaligned range).
var ErrNoReflink = errors.New("fsutil: reflink not supported here")

// Reflink makes [dstOff, dstOff+n) of dst share src's extents of
// [srcOff, srcOff+n) (FICLONERANGE): O(extents), no data moves. Offsets
// and n must be multiples of the file system's block size, except that n
// may run to src's end. A file system that cannot is ErrNoReflink.
func Reflink(dst, src *os.File, srcOff, dstOff, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.IoctlFileCloneRange(int(dst.Fd()), &unix.FileCloneRange{
		Src_fd: int64(src.Fd()), Src_offset: uint64(srcOff), Src_length: uint64(n), Dest_offset: uint64(dstOff),
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EXDEV),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: %v", ErrNoReflink, err)
	}
	return fmt.Errorf("reflink: %w", err)
}

// CopyRange copies [srcOff, srcOff+n) of src to dstOff of dst inside the
// kernel (copy_file_range): no bytes pass through user space, and on file
// systems that can (NFS, XFS, btrfs) the copy is offloaded further. A
// kernel or file system that cannot returns errors.ErrUnsupported.
func CopyRange(dst, src *os.File, srcOff, dstOff, n int64) error {
	for n > 0 {
		so, do := srcOff, dstOff
		c, err := unix.CopyFileRange(int(src.Fd()), &so, int(dst.Fd()), &do, int(min(n, 1<<30)), 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
			return fmt.Errorf("copy_file_range: %w (%w)", errors.ErrUnsupported, err)
		case err != nil:
			return fmt.Errorf("copy_file_range: %w", err)
		case c == 0:
			return fmt.Errorf("copy_file_range: %w: source ends at %d", errors.ErrUnsupported, srcOff)
		}
		srcOff, dstOff, n = srcOff+int64(c), dstOff+int64(c), n-int64(c)
	}
	return nil
}

// BlockSize is f's file-system block size: the alignment Reflink needs.
func BlockSize(f *os.File) int64 {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Bsize <= 0 {
		return 4096
	}
	return st.Bsize
}

// Links is the number of directory entries (hard links) of a file, from
// its FileInfo; 1 where the system does not say.
func Links(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// ZeroRangeFast makes [off, off+length) read as zeroes and stay
// allocated without writing zeroes: FALLOC_FL_ZERO_RANGE, or where the
// file system lacks it (tmpfs) a punched hole allocated again. A file
// system that can do neither is errors.ErrUnsupported, nothing changed.
func ZeroRangeFast(f *os.File, off, length int64) error {
	if length <= 0 {
		return nil
	}
	fd := int(f.Fd())
	err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
		return wrapNoSup("zero range", err)
	}
	// Probe that allocation works before punching: a file system that
	// punches but cannot allocate would leave the range a hole.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
		return wrapNoSup("zero range", err)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
		return wrapNoSup("zero range", err)
	}
	return wrapNoSup("zero range", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, length))
}

func wrapNoSup(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%s: %w (%w)", what, errors.ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// fallocWriteZeroes is FALLOC_FL_WRITE_ZEROES (Linux 6.17): allocate and
// zero written extents, offloaded to the device where it can.
const fallocWriteZeroes = 0x80

// Reserve allocates [off, off+length) of f (below its size). With
// written, the extents are made written zeroes where the kernel can do
// that without writing through the page cache (FALLOC_FL_WRITE_ZEROES),
// else they are left unwritten (they read as zeroes either way); it
// reports whether written zeroes were made.
func Reserve(f *os.File, off, length int64, written bool) (bool, error) {
	if length <= 0 {
		return written, nil
	}
	fd := int(f.Fd())
	if written {
		err := unix.Fallocate(fd, fallocWriteZeroes, off, length) // within the file's size
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return false, fmt.Errorf("fallocate write zeroes: %w", err)
		}
	}
	return false, wrapNoSup("fallocate", unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, length))
}

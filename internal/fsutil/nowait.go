package fsutil

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ErrWouldBlock is returned by ReadNoWait when part of the range is not
// in the page cache: reading it would wait for the device.
var ErrWouldBlock = errors.New("fsutil: data not in the page cache")

// ReadNoWait reads len(p) bytes at off like ReadFull (bytes past the end
// of the file read as zeroes) but only from the page cache:
// preadv2(RWF_NOWAIT). When any part of the range would need the device
// it returns ErrWouldBlock, with p's content unspecified, so a caller
// that must not stall (an NBD connection's reader) can hand the request
// to a goroutine that may. A kernel or file system without RWF_NOWAIT
// gives errors.ErrUnsupported.
func ReadNoWait(f *os.File, p []byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	cerr := rc.Read(func(fd uintptr) bool {
		rerr = preadNoWait(int(fd), p, off)
		return true
	})
	if cerr != nil {
		return cerr
	}
	var errno unix.Errno
	if errors.As(rerr, &errno) {
		return &os.PathError{Op: "preadv2", Path: f.Name(), Err: rerr}
	}
	return rerr
}

// preadNoWait loops over short reads: RWF_NOWAIT returns what is cached
// up to the first page that is not, and EAGAIN only when none is.
func preadNoWait(fd int, p []byte, off int64) error {
	iov := [][]byte{nil}
	for len(p) > 0 {
		iov[0] = p
		n, err := unix.Preadv2(fd, iov, off, unix.RWF_NOWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return ErrWouldBlock
		case err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS:
			return errors.ErrUnsupported
		case err != nil:
			return err
		case n == 0: // end of file: the rest reads as zeroes (ReadFull)
			clear(p)
			return nil
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

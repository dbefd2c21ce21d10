package vfs

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// ErrMapFault: a store through a shared mapping faulted (SIGBUS: the
// file system had no space for a hole, or an I/O error). Bytes before
// the faulting page may have been stored.
var ErrMapFault = errors.New("write through a shared mapping faulted")

// WriteMapped stores p at off of f through a shared mapping of the pages
// it covers instead of write(2): the kernel then takes no inode lock, so
// a small write does not queue behind large writes to the same file (nor
// behind one throttled for dirty pages while holding that lock). The
// data is in the page cache exactly as a write's; Datasync makes it
// durable. Off the OS file system it returns errors.ErrUnsupported; a
// fault (see ErrMapFault) is returned, not a crash.
func WriteMapped(f File, p []byte, off int64) (err error) {
	of, ok := f.(*os.File)
	if !ok || len(p) == 0 {
		return errors.ErrUnsupported
	}
	page := int64(os.Getpagesize())
	base := off &^ (page - 1)
	m, err := unix.Mmap(int(of.Fd()), base, int(off-base)+len(p), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
	}
	defer unix.Munmap(m)
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMapFault, r)
		}
	}()
	copy(m[off-base:], p)
	return nil
}

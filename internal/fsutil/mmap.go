package fsutil

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mapping is a read-only view of part of a file, used where copying the
// bytes out of the page cache costs more than the work done on them: a
// full backup read through pread spent ~7% of its CPU in the kernel's
// copy (bench/backup.sh under perf).
//
// The bytes are the file's live contents: a write to the file shows
// through. A read past the end of a file truncated after mapping faults
// with SIGBUS, which the Go runtime turns into a recoverable panic only
// in a goroutine that called debug.SetPanicOnFault(true).
type Mapping struct {
	Bytes []byte // exactly the requested range
	whole []byte // the page-aligned mapping
}

// MapRead maps [off, off+n) of f read-only and asks the kernel to fill
// the page tables now (MADV_POPULATE_READ, Linux 5.14) rather than fault
// page by page; on older kernels the pages fault in as they are read.
func MapRead(f *os.File, off, n int64) (*Mapping, error) {
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("map %s: range %d+%d: %w", f.Name(), off, n, os.ErrInvalid)
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	whole, err := unix.Mmap(int(f.Fd()), start, int(off+n-start), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	_ = unix.Madvise(whole, unix.MADV_POPULATE_READ) // a hint: errors only mean lazier faults
	return &Mapping{Bytes: whole[off-start:], whole: whole}, nil
}

// Contains reports whether addr lies in the mapping, so a fault there
// (the file truncated) can be told from a bug elsewhere.
func (m *Mapping) Contains(addr uintptr) bool {
	if len(m.whole) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(&m.whole[0]))
	return addr >= start && addr-start < uintptr(len(m.whole))
}

// Close unmaps the view; its Bytes must not be used after.
func (m *Mapping) Close() error {
	if m.whole == nil {
		return nil
	}
	err := unix.Munmap(m.whole)
	m.whole, m.Bytes = nil, nil
	return err
}

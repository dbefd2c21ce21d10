package disk

import (
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// ErrWouldBlock: a ReadAtNoWait that would have waited — for the device
// (data not in the page cache), for the disk's barrier, or behind a
// compare-and-write. Nothing is wrong: the caller reads with ReadAt.
var ErrWouldBlock = errors.New("read would wait")

// ReadAtNoWait reads len(p) bytes at off of the live disk like ReadAt,
// but only if that takes no waiting: every layer's bytes come from the
// page cache (preadv2 RWF_NOWAIT) and no lock is waited for. Otherwise
// it returns ErrWouldBlock and p's content is unspecified. An NBD
// connection's reader serves a cached read with it at once and gives a
// miss to a worker (internal/nbd, transmit.go).
func (d *Disk) ReadAtNoWait(p []byte, off int64) (int, error) {
	if !d.barrier.TryRLock() {
		return 0, ErrWouldBlock
	}
	defer d.barrier.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	if err := checkRange(off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	// Whole with respect to every compare-and-write (C5), as readLive,
	// but a race is handed back rather than retried under the locks.
	spans := d.stripeSpans(d.grains(off, int64(len(p))))
	before, busy := d.cawCount(spans)
	if busy {
		return 0, ErrWouldBlock
	}
	if err := d.readChainBy(d.chain, p, off, readNoWait); err != nil {
		return 0, err
	}
	if after, _ := d.cawCount(spans); after != before {
		return 0, ErrWouldBlock
	}
	return len(p), nil
}

// ReadAtNoWait reads the snapshot's data like ReadAt if that takes no
// waiting (see Disk.ReadAtNoWait), else returns ErrWouldBlock.
func (s *Snapshot) ReadAtNoWait(p []byte, off int64) (int, error) {
	if !s.d.barrier.TryRLock() {
		return 0, ErrWouldBlock
	}
	defer s.d.barrier.RUnlock()
	return s.readLocked(p, off, readNoWait)
}

// readNoWait reads from the page cache only. A file that cannot promise
// that (not the operating system's, or no RWF_NOWAIT) would block too.
func readNoWait(f vfs.File, p []byte, off int64) error {
	err := vfs.ReadNoWait(f, p, off)
	if errors.Is(err, fsutil.ErrWouldBlock) || errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("%w: %w", ErrWouldBlock, err)
	}
	return err
}

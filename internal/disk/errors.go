package disk

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/metafile"
)

// Errors. Each is wrapped with context; test with errors.Is.
var (
	ErrInvalidName     = errors.New("invalid name")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrBusy            = errors.New("busy") // locked by another process, in use, or an operation is running
	ErrMisaligned      = errors.New("request not aligned to 512 bytes")
	ErrOutOfRange      = errors.New("request beyond the end of the disk")
	ErrReadOnly        = errors.New("read-only") // writes to a snapshot
	ErrShrink          = errors.New("shrinking a disk is not supported")
	ErrClosed          = errors.New("disk closed")
	ErrCorrupt         = metafile.ErrCorrupt    // a file failed validation; the message names it
	ErrChangeIDInvalid = cbt.ErrChangeIDInvalid // a full backup is needed
	ErrCBTDisabled     = errors.New("changed block tracking is disabled on this disk")
	ErrFailed          = errors.New("disk failed: an earlier write to its metadata failed; reopen it")
	// ErrNoSpace: the datastore's file system is full (ENOSPC, or EDQUOT
	// for a quota). The request changed nothing the disk depends on: it
	// may be retried once space is freed, and the disk keeps serving
	// reads and overwrites of allocated blocks meanwhile. The file
	// system's errno stays in the chain (errors.Is(err, syscall.ENOSPC)).
	ErrNoSpace = errors.New("no space left in the datastore")
	// ErrNotSupported: the engine cannot offload this request (a fast
	// zero that would write zeroes, a copy it cannot do inside the
	// datastore, a linked clone on a file system without hard links).
	// Nothing was changed: the caller falls back to moving the data.
	ErrNotSupported = errors.New("operation cannot be offloaded here")
	// ErrTooLarge: a copy request longer than MaxCopySegment.
	ErrTooLarge = errors.New("request larger than the maximum segment")
	// ErrInvalid: a request the engine cannot take as asked (an unknown
	// provisioning mode, overlapping copy ranges, a reclaim of a thick disk).
	ErrInvalid = errors.New("invalid request")
	// ErrTreePending: the snapshot's hash tree is still being computed
	// (docs/format.md, "Hash tree"); wait and ask again.
	ErrTreePending = errors.New("snapshot hash tree still being computed")
	// ErrNoTree: the snapshot has no hash tree and will get none (the
	// disk tracks no changes, or the datastore keeps no trees).
	ErrNoTree = errors.New("snapshot has no hash tree")
)

// noSpace marks a file-system "full" error with ErrNoSpace (keeping the
// original in the chain); other errors pass unchanged.
func noSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Sector is the alignment of every offset and length.
const Sector = 512

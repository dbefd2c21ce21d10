package disk

import (
	"errors"

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
)

// Sector is the alignment of every offset and length.
const Sector = 512

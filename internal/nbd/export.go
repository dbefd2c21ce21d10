package nbd

import (
	"context"
	"errors"
)

// Extent flags of the base:allocation context (NBD spec, "base:allocation").
const (
	StateHole uint32 = 1 << 0 // NBD_STATE_HOLE: not allocated
	StateZero uint32 = 1 << 1 // NBD_STATE_ZERO: reads as zeroes
	// StateDirty is the qemu:dirty-bitmap flag: the extent changed.
	StateDirty uint32 = 1 << 0
)

// Context names the server understands besides the dynamic ones an
// Export offers.
const (
	ContextBaseAllocation = "base:allocation"
	DirtyBitmapPrefix     = "qemu:dirty-bitmap:"
)

// Extent is one run of a block-status answer.
type Extent struct {
	Length uint64
	Flags  uint32
}

// Backend errors. The server maps them to NBD error codes; an Export
// MUST return (a wrapping of) one of them for every expected failure so
// the client gets the spec's code rather than EIO.
var (
	ErrReadOnly      = errors.New("nbd: export is read-only")          // EPERM
	ErrOutOfRange    = errors.New("nbd: request beyond end of export") // EINVAL / ENOSPC for writes
	ErrMisaligned    = errors.New("nbd: request not aligned")          // EINVAL
	ErrNotSupported  = errors.New("nbd: operation not supported")      // ENOTSUP (e.g. FAST_ZERO that would be slow)
	ErrNoSpace       = errors.New("nbd: no space left")                // ENOSPC (so is a wrapped syscall.ENOSPC or EDQUOT)
	ErrUnknownExport = errors.New("nbd: unknown export")               // NBD_REP_ERR_UNKNOWN
)

// BlockSizes are the constraints advertised with NBD_INFO_BLOCK_SIZE.
type BlockSizes struct {
	Minimum, Preferred, Maximum uint32
}

// Export is one served block device. Offsets and lengths given to it are
// already checked by the server against Size and BlockSizes.Minimum.
//
// An Export MUST be safe for concurrent use: the server issues requests of
// one or several connections in parallel. A successful Flush MUST make every
// write completed before it durable. WriteAt with fua MUST be durable before
// it returns.
type Export interface {
	Size() int64
	ReadOnly() bool
	// MultiConn reports whether writes and flushes are consistent across
	// connections to the same export (NBD_FLAG_CAN_MULTI_CONN).
	MultiConn() bool
	BlockSizes() BlockSizes

	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Zero writes zeroes. punch allows deallocation (the client did not
	// send NO_HOLE); fast asks to fail with ErrNotSupported rather than
	// fall back to writing zeroes slowly (FAST_ZERO).
	Zero(ctx context.Context, off, length int64, punch, fast bool) error
	Trim(ctx context.Context, off, length int64) error
	Flush(ctx context.Context) error

	// MetaContexts lists the context names this export offers whose name
	// starts with prefix ("" lists all); base:allocation included.
	MetaContexts(prefix string) []string
	// BlockStatus answers for context name over [off, off+length): extents
	// in order, starting at off, their total at most length and at least
	// one byte. The server may truncate the list.
	BlockStatus(ctx context.Context, context string, off, length int64) ([]Extent, error)

	Close() error
}

// NoWaitReader is implemented by an Export that can try a read without
// waiting for storage (a page-cache hit). The server then runs a READ on
// the connection's reader goroutine when it can, which saves the two
// goroutine hand-offs of a worker per request, and gives it to a worker
// when it cannot (transmit.go, runInline).
type NoWaitReader interface {
	// ReadAtNoWait reads like ReadAt if that needs no waiting: no device
	// I/O and no lock held for long. Otherwise it MUST return at once
	// with an error wrapping ErrWouldBlock. On any error p's content is
	// unspecified and nothing was served: the server reads with ReadAt.
	ReadAtNoWait(ctx context.Context, p []byte, off int64) error
}

// ErrWouldBlock is what a NoWaitReader returns for a read it cannot
// serve without waiting. It never reaches a client.
var ErrWouldBlock = errors.New("nbd: read would wait")

// Exporter resolves export names for a server.
type Exporter interface {
	// Open returns the named export ("" is the default export, if any),
	// or an error wrapping ErrUnknownExport. The server calls Close on
	// every Export it opened once the connection (or the NBD_OPT_INFO or
	// meta context query) using it is over, so a shared Export needs a
	// reference-counted or no-op Close.
	Open(ctx context.Context, name string) (Export, error)
	// List names the exports, with an optional description each.
	List(ctx context.Context) ([]ExportInfo, error)
}

// ExportInfo describes an export in NBD_OPT_LIST.
type ExportInfo struct {
	Name, Description string
}

package nbd

import (
	"errors"
	"fmt"
	"syscall"
)

// Handshake magics and flags.
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic  = 0x3e889045565a9
	flagFixedNew   = 1 << 0
	flagNoZeroes   = 1 << 1
	clientFixedNew = 1 << 0
	clientNoZeroes = 1 << 1
)

// Option types.
const (
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructuredRepl = 8
	optListMetaCtx    = 9
	optSetMetaCtx     = 10
)

// Option reply types.
const (
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repMetaContext  = 4
	repErrBit       = 1 << 31
	repErrUnsup     = repErrBit + 1
	repErrPolicy    = repErrBit + 2
	repErrInvalid   = repErrBit + 3
	repErrTLSReqd   = repErrBit + 5
	repErrUnknown   = repErrBit + 6
	repErrShutdown  = repErrBit + 7
	repErrTooBig    = repErrBit + 9
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags sent with the export size.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
	FlagSendCache       uint16 = 1 << 10
	FlagSendFastZero    uint16 = 1 << 11
)

// Transmission request magic, commands and command flags.
const (
	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 1<<15 + 1
	chunkErrorOffset = 1<<15 + 2

	requestHeaderLen = 28
	simpleHeaderLen  = 16
	chunkHeaderLen   = 20
)

// NBD error codes (the spec's errno values; not the host's).
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// Limits.
const (
	// DefaultMaxPayload is the largest READ/WRITE payload when an export
	// advertises no maximum block size: 32 MiB, what qemu and libnbd use.
	DefaultMaxPayload = 32 << 20
	// maxOptionLen bounds option data; names and queries are far smaller.
	maxOptionLen = 64 << 10
	// maxExtentsPerChunk bounds one BLOCK_STATUS chunk (spec: 2^20).
	maxExtentsPerChunk = 1 << 20
	maxStringLen       = 4096
)

// Error is an error code a peer returned on the wire, with its optional
// message. errors.Is matches it against the backend sentinels, so code on
// top of a Client can test for ErrReadOnly, ErrNoSpace and so on.
type Error struct {
	Code    uint32
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("nbd: server error %s: %s", errnoName(e.Code), e.Message)
	}
	return fmt.Sprintf("nbd: server error %s", errnoName(e.Code))
}

// Is maps wire codes back to the sentinels the server maps them from.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrReadOnly:
		return e.Code == EPERM
	case ErrOutOfRange, ErrMisaligned:
		return e.Code == EINVAL
	case ErrNotSupported:
		return e.Code == ENOTSUP
	case ErrNoSpace:
		return e.Code == ENOSPC
	}
	return false
}

func errnoName(c uint32) string {
	names := map[uint32]string{EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
		ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN"}
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", c)
}

// ErrorCode maps an Export error to the NBD error code sent to clients.
// Unknown errors become EIO: the client cannot act on our internals.
func ErrorCode(err error) uint32 {
	var we *Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &we):
		return we.Code
	case errors.Is(err, ErrReadOnly):
		return EPERM
	case errors.Is(err, ErrOutOfRange), errors.Is(err, ErrMisaligned):
		return EINVAL
	case errors.Is(err, ErrNotSupported):
		return ENOTSUP
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// A full file system under the export: ENOSPC lets the client
		// tell it from an I/O error (QEMU's werror=enospc pauses the VM).
		return ENOSPC
	}
	return EIO
}

// Package-level errors of the client and server.
var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("nbd: server closed")
	// ErrClientClosed is returned by Client calls after Close or after the
	// connection failed (then wrapping the cause).
	ErrClientClosed = errors.New("nbd: client closed")
	// ErrProtocol reports a peer that broke the protocol; the connection
	// is dropped because the byte stream can no longer be trusted.
	ErrProtocol = errors.New("nbd: protocol error")
	// ErrTLSRequired is returned by Dial when the server insists on TLS
	// and the URI did not ask for it.
	ErrTLSRequired = errors.New("nbd: server requires TLS")
)

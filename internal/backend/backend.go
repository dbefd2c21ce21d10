package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// FileType groups objects. Each type is a separate namespace.
type FileType string

// The object types a repository uses.
const (
	Config    FileType = "config"    // the single repository config object
	Keys      FileType = "keys"      // password-wrapped master keys
	Data      FileType = "data"      // pack files holding chunks and index pages
	Index     FileType = "index"     // index files: blob ID -> pack, offset, length
	Manifests FileType = "manifests" // restore points
	Locks     FileType = "locks"     // lock files
)

// Types lists every valid FileType, in a stable order.
var Types = []FileType{Config, Keys, Data, Index, Manifests, Locks}

// Handle names one object.
type Handle struct {
	Type FileType
	Name string
}

// String implements fmt.Stringer.
func (h Handle) String() string { return string(h.Type) + "/" + h.Name }

// Valid reports whether h can be stored. Names are restricted to a
// portable alphabet so they map onto file names and object keys alike;
// data names need at least two characters for the fan-out directory.
func (h Handle) Valid() error {
	if !validType(h.Type) {
		return fmt.Errorf("backend: invalid handle %q: unknown type: %w", h, ErrInvalid)
	}
	if h.Name == "" || len(h.Name) > 128 || strings.Trim(h.Name, nameAlphabet) != "" {
		return fmt.Errorf("backend: invalid handle %q: bad name: %w", h, ErrInvalid)
	}
	if h.Type == Data && len(h.Name) < 2 {
		return fmt.Errorf("backend: invalid handle %q: data name too short: %w", h, ErrInvalid)
	}
	return nil
}

const nameAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

func validType(t FileType) bool {
	for _, v := range Types {
		if v == t {
			return true
		}
	}
	return false
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name string
	Size int64
}

// Sentinel errors. Implementations MUST return errors for which errors.Is
// reports these so callers never match on strings.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("backend: object not found")
	// ErrExists: Save found the object already present and did not touch it.
	ErrExists = errors.New("backend: object already exists")
	// ErrInvalid: a handle or argument the backend refuses outright.
	ErrInvalid = errors.New("backend: invalid argument")
	// ErrTransient marks a failure that may succeed when retried (a
	// timeout, a dropped connection, a throttled request). Only errors that
	// match it, or that have a Temporary() bool method returning true, are
	// retried by Retry.
	ErrTransient = errors.New("backend: transient error")
)

// Backend is the storage contract. All methods MUST be safe for concurrent
// use and MUST honour ctx cancellation at least between I/O calls.
type Backend interface {
	// Save stores data under h.
	//  - It MUST be atomic: a concurrent or later Load, Stat or List sees
	//    either no object or the complete one, never a prefix, even if the
	//    process or machine crashes during Save.
	//  - It MUST be durable once it returns nil.
	//  - It MUST NOT replace an existing object: if h exists it MUST return
	//    an error matching ErrExists and leave the object untouched. This
	//    is a conditional create, so two writers never overwrite each other.
	//  - It MUST NOT keep a reference to data after returning.
	Save(ctx context.Context, h Handle, data []byte) error

	// Load returns a reader of length bytes of h starting at offset. A
	// length of 0 means "to the end". It MUST return ErrNotFound if h does
	// not exist, and an error if offset+length runs past the end (the
	// reader MUST NOT silently return fewer bytes). The caller MUST Close
	// the reader.
	Load(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)

	// Stat returns h's size, or ErrNotFound.
	Stat(ctx context.Context, h Handle) (FileInfo, error)

	// List calls fn for every complete object of type t, in no particular
	// order. An error from fn stops the listing and is returned. Objects
	// saved or removed during List may or may not be reported.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error

	// Remove deletes h. It MUST return ErrNotFound if h does not exist.
	Remove(ctx context.Context, h Handle) error

	// Close releases resources. Using the Backend afterwards is undefined.
	Close() error
}

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrTransient) {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// LoadAll reads a whole object (or a range) into memory.
func LoadAll(ctx context.Context, be Backend, h Handle, offset, length int64) ([]byte, error) {
	return LoadInto(ctx, be, h, offset, length, nil)
}

// LoadInto is LoadAll reading into buf's memory when length > 0 and buf
// has the capacity (a restore reuses its buffers instead of zeroing a
// fresh one per ranged load); the result may alias buf.
func LoadInto(ctx context.Context, be Backend, h Handle, offset, length int64, buf []byte) ([]byte, error) {
	rd, err := be.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	if sr, ok := rd.(interface{ Size() int64 }); ok && length <= 0 {
		length = sr.Size() // a whole object of known size (a local file)
	}
	if length > 0 {
		// A known length reads into one buffer: io.ReadAll would grow it
		// by doubling, copying a multi-MiB range several times.
		if int64(cap(buf)) >= length {
			buf = buf[:length]
		} else {
			buf = make([]byte, length)
		}
		var n int
		n, err = io.ReadFull(rd, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil // short: the caller sees len(buf) and decides
		}
		buf = buf[:n]
	} else {
		buf, err = io.ReadAll(rd)
	}
	cerr := rd.Close()
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("backend: read %v: %w", h, err)
	}
	return buf, nil
}

// CheckRange validates a Load range against an object size. Implementations
// share it so they agree on the edge cases.
func CheckRange(h Handle, size, offset, length int64) (int64, error) {
	if offset < 0 || length < 0 {
		return 0, fmt.Errorf("backend: load %v: negative range: %w", h, ErrInvalid)
	}
	if length == 0 {
		length = size - offset
	}
	if offset > size || offset+length > size {
		return 0, fmt.Errorf("backend: load %v: range %d+%d beyond size %d: %w", h, offset, length, size, ErrInvalid)
	}
	return length, nil
}

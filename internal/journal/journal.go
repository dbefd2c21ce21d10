package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/blockwise/blockwise/internal/metafile"
	"github.com/blockwise/blockwise/internal/vfs"
)

const (
	magic      = "BWJRNL01"
	version    = 2
	headerSize = metafile.HeaderSize + 8
	recHeader  = 9
	// MaxPayload bounds one record so a damaged length cannot make replay
	// allocate without limit.
	MaxPayload = 256 << 20
)

// ErrCorrupt is returned when the journal header is invalid.
var ErrCorrupt = metafile.ErrCorrupt

// Record is one replayed entry.
type Record struct {
	Type    byte
	Payload []byte
}

// Log is an open journal. Append and Sync are safe for concurrent use.
type Log struct {
	path string
	mu   struct {
		sync.Mutex
		f    vfs.File
		size int64
		// reserve is how much to keep preallocated past size (0: none);
		// reserved is where the preallocated space is known to end.
		reserve, reserved int64
	}
}

// Create makes a new, empty journal for generation gen in fsys and syncs
// it.
func Create(fsys vfs.FS, path string, gen uint64) (*Log, error) {
	l, err := CreateUnsynced(fsys, path, gen)
	if err != nil {
		return nil, err
	}
	if err := l.Sync(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// CreateUnsynced is Create without the sync: for a caller that syncs the
// journal (Sync) before anything names it, alongside its other syncs.
func CreateUnsynced(fsys vfs.FS, path string, gen uint64) (*Log, error) {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	var g [8]byte
	binary.LittleEndian.PutUint64(g[:], gen)
	hdr := metafile.Encode(magic, version, g[:])
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		return nil, err
	}
	l := &Log{path: path}
	l.mu.f, l.mu.size = f, int64(len(hdr))
	return l, nil
}

// Open replays the journal at path in fsys, which must belong to generation gen,
// truncates a torn tail and returns the log positioned for appending.
func Open(fsys vfs.FS, path string, gen uint64) (*Log, []Record, error) {
	data, err := vfs.ReadFile(fsys, path)
	if err != nil {
		return nil, nil, err
	}
	if len(data) < headerSize {
		return nil, nil, fmt.Errorf("%s: %w: truncated header", path, ErrCorrupt)
	}
	_, body, err := metafile.Decode(path, magic, version, data[:headerSize])
	if err != nil {
		return nil, nil, err
	}
	if g := binary.LittleEndian.Uint64(body); g != gen {
		return nil, nil, fmt.Errorf("%s: %w: generation %d, want %d", path, ErrCorrupt, g, gen)
	}
	recs, end := Parse(data[headerSize:])
	f, err := fsys.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, err
	}
	size := int64(headerSize + end)
	if size < int64(len(data)) {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	l := &Log{path: path}
	l.mu.f, l.mu.size = f, size
	return l, recs, nil
}

// Parse decodes records from b until the end or the first damaged record,
// returning them and the number of bytes they span.
func Parse(b []byte) ([]Record, int) {
	var recs []Record
	off := 0
	for len(b)-off >= recHeader {
		n := binary.LittleEndian.Uint32(b[off:])
		if n > MaxPayload || uint64(len(b)-off-recHeader) < uint64(n) {
			break
		}
		body := b[off+8 : off+recHeader+int(n)]
		if metafile.Checksum(body) != binary.LittleEndian.Uint32(b[off+4:]) {
			break
		}
		recs = append(recs, Record{Type: body[0], Payload: body[1:]})
		off += recHeader + int(n)
	}
	return recs, off
}

// Encode frames one record.
func Encode(typ byte, payload []byte) []byte {
	out := make([]byte, recHeader+len(payload))
	binary.LittleEndian.PutUint32(out, uint32(len(payload)))
	out[8] = typ
	copy(out[9:], payload)
	binary.LittleEndian.PutUint32(out[4:], metafile.Checksum(out[8:]))
	return out
}

// Append writes records without syncing them: all of them, or on error
// none (the log is as it was before the call).
func (l *Log) Append(recs ...Record) error {
	var buf []byte
	for _, r := range recs {
		if len(r.Payload) > MaxPayload {
			return fmt.Errorf("journal: record of %d bytes exceeds limit", len(r.Payload))
		}
		buf = append(buf, Encode(r.Type, r.Payload)...)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f == nil {
		return os.ErrClosed
	}
	if _, err := l.mu.f.WriteAt(buf, l.mu.size); err != nil {
		// A short write (ENOSPC, say) is cut off again, so the log stays
		// whole records and a later Append, once there is space, retries.
		if terr := l.mu.f.Truncate(l.mu.size); terr != nil {
			return fmt.Errorf("journal %s: append failed (%v) and could not be cut off: %w", l.path, err, terr)
		}
		l.mu.reserved = l.mu.size // the truncation may have freed it
		return err
	}
	l.mu.size += int64(len(buf))
	l.extend()
	return nil
}

// Reserve keeps n bytes preallocated past the journal's end from now on,
// renewed whenever appends have used half of it; best effort: where the
// file system is full the reserve stays as it is, and Short tells. A file
// (or file system) that cannot preallocate keeps none, and Short is then
// always false.
func (l *Log) Reserve(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.reserve = n
	l.extend()
}

// extend renews the reserve when less than half of it is left. mu held.
func (l *Log) extend() {
	if l.mu.reserve <= 0 || l.mu.f == nil || l.mu.reserved-l.mu.size >= l.mu.reserve/2 {
		return
	}
	err := vfs.Preallocate(l.mu.f, l.mu.size, l.mu.reserve)
	switch {
	case err == nil:
		l.mu.reserved = l.mu.size + l.mu.reserve
	case errors.Is(err, errors.ErrUnsupported):
		l.mu.reserve = 0
	}
}

// Short reports that the journal keeps a reserve, could not renew it (the
// file system is full) and has less than an eighth of it left: enough for
// a few small records, which the CBT tracker keeps for its region records
// (cbt.ErrRegionsOnly).
func (l *Log) Short() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	low := func() bool { return l.mu.reserve > 0 && l.mu.reserved-l.mu.size < l.mu.reserve/8 }
	if low() {
		l.extend() // space may have been freed since the last try
	}
	return low()
}

// Sync makes every appended record durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	f := l.mu.f
	l.mu.Unlock()
	if f == nil {
		return os.ErrClosed
	}
	return vfs.Datasync(f)
}

// Size is the journal's length in bytes.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.size
}

// Close closes the file without syncing.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f == nil {
		return nil
	}
	err := l.mu.f.Close()
	l.mu.f = nil
	return err
}

// ReadAll is Open without keeping the file: replay only.
func ReadAll(fsys vfs.FS, path string, gen uint64) ([]Record, error) {
	l, recs, err := Open(fsys, path, gen)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return recs, l.Close()
}

// Release gives the reserve back to the file system (the space
// preallocated past the journal's end) and keeps none until the next
// Reserve. A checkpoint on a full file system uses it: the next
// generation's files need the space, and its journal reserves again.
func (l *Log) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f == nil {
		return os.ErrClosed
	}
	if l.mu.reserve <= 0 {
		return errors.ErrUnsupported // nothing reserved to give back
	}
	if err := l.mu.f.Truncate(l.mu.size); err != nil {
		return err
	}
	l.mu.reserve, l.mu.reserved = 0, l.mu.size
	return nil
}

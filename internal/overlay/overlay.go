package overlay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// BlockSize is the overlay's unit: a write smaller than a block copies
// the rest of it up from the point first (the caller does).
const BlockSize = 4096

// File names inside an overlay directory.
const (
	metaName    = "overlay.json"
	dataName    = "overlay.data"
	journalName = "overlay.map"
	lockName    = "lock"
)

// Errors.
var (
	// ErrInUse: another process has the overlay directory open.
	ErrInUse = errors.New("overlay: directory in use by another process")
	// ErrMismatch: the directory holds the overlay of another point or
	// disk size.
	ErrMismatch = errors.New("overlay: directory belongs to another restore point")
	// ErrCorrupt: the map journal or the metadata failed validation.
	ErrCorrupt = errors.New("overlay: damaged")
	// ErrNoSpace: the overlay's file system is full; the write was not
	// taken (the guest sees ENOSPC and may retry).
	ErrNoSpace = errors.New("overlay: no space left")
)

// Meta identifies what an overlay sits on.
type Meta struct {
	Format    int    `json:"format"`
	Point     string `json:"point"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
}

// Overlay is an open overlay directory. It is safe for concurrent use;
// writes to the same block must be serialized by the caller.
type Overlay struct {
	dir     string
	meta    Meta
	lock    *os.File
	data    *os.File
	journal *os.File
	present []atomic.Uint64 // bit per block

	mu      sync.Mutex // pending and the journal's tail
	pending []run      // present runs not yet in the journal
	jsize   int64
	count   atomic.Int64 // present blocks
}

type run struct{ first, n uint64 }

// Open opens the overlay in dir for point (a restore point's ID) of size
// bytes, creating it if dir holds none. The directory is locked until
// Close: a second Open, in this process or another, fails with ErrInUse.
func Open(dir, point string, size int64) (*Overlay, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("overlay %s: %w", dir, spaceErr(err))
	}
	lock, err := fsutil.Lock(filepath.Join(dir, lockName))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("overlay %s: %w", dir, ErrInUse)
	} else if err != nil {
		return nil, fmt.Errorf("overlay %s: %w", dir, spaceErr(err))
	}
	o := &Overlay{dir: dir, lock: lock}
	if err := o.open(point, size); err != nil {
		o.Close()
		return nil, fmt.Errorf("overlay %s: %w", dir, err)
	}
	return o, nil
}

func (o *Overlay) open(point string, size int64) error {
	want := Meta{Format: 1, Point: point, Size: size, BlockSize: BlockSize}
	if err := o.loadMeta(want); err != nil {
		return err
	}
	var err error
	if o.data, err = os.OpenFile(filepath.Join(o.dir, dataName), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return spaceErr(err)
	}
	if err := o.data.Truncate(size); err != nil {
		return spaceErr(err)
	}
	o.present = make([]atomic.Uint64, (o.Blocks()+63)/64)
	return o.replay()
}

// loadMeta reads the directory's metadata, or writes want into a new one.
func (o *Overlay) loadMeta(want Meta) error {
	b, err := os.ReadFile(filepath.Join(o.dir, metaName))
	if errors.Is(err, os.ErrNotExist) {
		b, _ := json.Marshal(want)
		o.meta = want
		return spaceErr(fsutil.WriteAtomic(filepath.Join(o.dir, metaName), b))
	} else if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &o.meta); err != nil {
		return fmt.Errorf("%s: %w: %v", metaName, ErrCorrupt, err)
	}
	if o.meta != want {
		return fmt.Errorf("%w: it holds point %s (%d bytes, format %d), not %s (%d bytes)",
			ErrMismatch, o.meta.Point, o.meta.Size, o.meta.Format, want.Point, want.Size)
	}
	return nil
}

// Dir is the overlay's directory.
func (o *Overlay) Dir() string { return o.dir }

// Size is the disk's size.
func (o *Overlay) Size() int64 { return o.meta.Size }

// Blocks is the number of blocks of the disk (the last may be short).
func (o *Overlay) Blocks() uint64 { return uint64((o.meta.Size + BlockSize - 1) / BlockSize) }

// Present reports whether block b holds a write.
func (o *Overlay) Present(b uint64) bool {
	return o.present[b/64].Load()&(1<<(b%64)) != 0
}

// AnyPresent reports whether any block of [first, first+n) holds a write.
func (o *Overlay) AnyPresent(first, n uint64) bool {
	for b := first; b < first+n; {
		w := o.present[b/64].Load() >> (b % 64)
		if w != 0 && bits.TrailingZeros64(w) < int(first+n-b) {
			return true
		}
		b += 64 - b%64
	}
	return false
}

// PresentBlocks is how many blocks hold writes.
func (o *Overlay) PresentBlocks() int64 { return o.count.Load() }

func (o *Overlay) mark(first, n uint64) {
	for b := first; b < first+n; b++ {
		if old := o.present[b/64].Or(1 << (b % 64)); old&(1<<(b%64)) == 0 {
			o.count.Add(1)
		}
	}
}

// ReadAt reads bytes of the data file; the caller reads only blocks that
// are present.
func (o *Overlay) ReadAt(p []byte, off int64) error {
	return fsutil.ReadFull(o.data, p, off)
}

// WriteBlocks stores p at off (both whole blocks, or ending at the disk's
// end) and marks the blocks present. The mark reaches the journal at the
// next Sync.
func (o *Overlay) WriteBlocks(p []byte, off int64) error {
	if err := o.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if _, err := o.data.WriteAt(p, off); err != nil {
		return fmt.Errorf("overlay: write at %d: %w", off, spaceErr(err))
	}
	o.note(off, int64(len(p)))
	return nil
}

// ZeroBlocks makes whole blocks read as zeroes (a punched hole) and marks
// them present.
func (o *Overlay) ZeroBlocks(off, n int64) error {
	if err := o.checkRange(off, n); err != nil {
		return err
	}
	if err := fsutil.PunchHole(o.data, off, n); err != nil {
		if err := fsutil.WriteZeroes(o.data, off, n); err != nil {
			return fmt.Errorf("overlay: zero at %d: %w", off, spaceErr(err))
		}
	}
	o.note(off, n)
	return nil
}

func (o *Overlay) checkRange(off, n int64) error {
	if off%BlockSize != 0 || (n%BlockSize != 0 && off+n != o.meta.Size) || off+n > o.meta.Size {
		return fmt.Errorf("overlay: range %d+%d not whole blocks of a %d-byte disk", off, n, o.meta.Size)
	}
	return nil
}

func (o *Overlay) note(off, n int64) {
	first, cnt := uint64(off/BlockSize), uint64((n+BlockSize-1)/BlockSize)
	o.mark(first, cnt)
	o.mu.Lock()
	if k := len(o.pending) - 1; k >= 0 && o.pending[k].first+o.pending[k].n == first {
		o.pending[k].n += cnt
	} else {
		o.pending = append(o.pending, run{first, cnt})
	}
	o.mu.Unlock()
}

// Sync makes every write so far durable: the data file first, then the
// journal records naming its blocks (invariant O1).
func (o *Overlay) Sync() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := fsutil.Datasync(o.data); err != nil {
		return fmt.Errorf("overlay: sync data: %w", spaceErr(err))
	}
	if len(o.pending) == 0 {
		return nil
	}
	buf := make([]byte, 0, len(o.pending)*recordSize)
	for _, r := range o.pending {
		buf = appendRecord(buf, r)
	}
	if _, err := o.journal.WriteAt(buf, o.jsize); err != nil {
		// A torn tail is cut at the next Open; the records stay pending.
		return fmt.Errorf("overlay: journal: %w", spaceErr(err))
	}
	if err := fsutil.Datasync(o.journal); err != nil {
		return fmt.Errorf("overlay: sync journal: %w", spaceErr(err))
	}
	o.jsize += int64(len(buf))
	o.pending = o.pending[:0]
	return nil
}

// Close releases the files and the directory's lock; writes not synced
// are not made durable.
func (o *Overlay) Close() error {
	var errs []error
	for _, f := range []*os.File{o.data, o.journal, o.lock} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Remove deletes the overlay's files and closes it: the caller has put
// every block somewhere durable first.
func (o *Overlay) Remove() error {
	return errors.Join(RemoveFiles(o.dir), o.Close())
}

// Exists reports whether dir holds an overlay.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, metaName))
	return err == nil
}

// spaceErr adds ErrNoSpace to a full file system's error.
func spaceErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Journal layout (docs/overlay.md): a 16-byte header, then records of
// recordSize bytes: first block (u64 LE), count (u64 LE), CRC-32C of the
// 16 bytes before it (u32 LE), 4 zero bytes.
const (
	journalMagic = "BWOVMAP1"
	headerSize   = 16
	recordSize   = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendRecord(b []byte, r run) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.first)
	b = binary.LittleEndian.AppendUint64(b, r.n)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[len(b)-16:], castagnoli))
	return binary.LittleEndian.AppendUint32(b, 0)
}

// replay opens (or creates) the journal and marks the blocks it names.
func (o *Overlay) replay() error {
	var err error
	path := filepath.Join(o.dir, journalName)
	if o.journal, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return spaceErr(err)
	}
	b, err := io.ReadAll(o.journal)
	if err != nil {
		return err
	}
	if len(b) < headerSize {
		hdr := make([]byte, headerSize)
		copy(hdr, journalMagic)
		binary.LittleEndian.PutUint32(hdr[8:], BlockSize)
		if _, err := o.journal.WriteAt(hdr, 0); err != nil {
			return spaceErr(err)
		}
		o.jsize = headerSize
		return spaceErr(errors.Join(o.journal.Truncate(headerSize), fsutil.Datasync(o.journal), fsutil.SyncDir(o.dir)))
	}
	runs, good, err := parseJournal(b, o.Blocks())
	if err != nil {
		return err
	}
	for _, r := range runs {
		o.mark(r.first, r.n)
	}
	o.jsize = int64(good)
	if present := o.presentRuns(); len(runs) > 2*len(present)+compactMin {
		return o.compact(present)
	}
	// A torn tail (a crash inside Sync) is cut, so appends follow the
	// last whole record.
	return o.journal.Truncate(o.jsize)
}

// compactMin: a journal is rewritten at Open once it holds this many
// records more than twice the runs it describes (a VM flushing often
// appends a record per run per flush).
const compactMin = 4096

// presentRuns lists the runs of present blocks.
func (o *Overlay) presentRuns() []run {
	var out []run
	for b := uint64(0); b < o.Blocks(); b++ {
		if !o.Present(b) {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].first+out[k].n == b {
			out[k].n++
		} else {
			out = append(out, run{b, 1})
		}
	}
	return out
}

// compact replaces the journal with one record per present run: a new
// file, synced, renamed over the old one, the directory synced (a crash
// leaves one or the other, both whole).
func (o *Overlay) compact(present []run) error {
	b := make([]byte, headerSize, headerSize+len(present)*recordSize)
	copy(b, journalMagic)
	binary.LittleEndian.PutUint32(b[8:], BlockSize)
	for _, r := range present {
		b = appendRecord(b, r)
	}
	path := filepath.Join(o.dir, journalName)
	if err := fsutil.WriteAtomic(path, b); err != nil {
		return spaceErr(err)
	}
	o.journal.Close()
	var err error
	if o.journal, err = os.OpenFile(path, os.O_RDWR, 0o600); err != nil {
		return err
	}
	o.jsize = int64(len(b))
	return nil
}

// parseJournal returns the runs of a journal's whole records and where
// they end. A record failing its checksum ends the journal only if no
// valid record follows it (a torn tail); otherwise the journal is damaged.
func parseJournal(b []byte, blocks uint64) ([]run, int, error) {
	if len(b) < headerSize || string(b[:8]) != journalMagic || binary.LittleEndian.Uint32(b[8:]) != BlockSize {
		return nil, 0, fmt.Errorf("%s: bad header: %w", journalName, ErrCorrupt)
	}
	var runs []run
	off := headerSize
	for ; off+recordSize <= len(b); off += recordSize {
		r, ok := parseRecord(b[off : off+recordSize])
		if !ok {
			break
		}
		if r.n == 0 || r.first >= blocks || r.n > blocks-r.first {
			return nil, 0, fmt.Errorf("%s: record at %d names blocks %d+%d of %d: %w", journalName, off, r.first, r.n, blocks, ErrCorrupt)
		}
		runs = append(runs, r)
	}
	for rest := off + recordSize; rest+recordSize <= len(b); rest += recordSize {
		if _, ok := parseRecord(b[rest : rest+recordSize]); ok {
			return nil, 0, fmt.Errorf("%s: bad record at %d before a good one at %d: %w", journalName, off, rest, ErrCorrupt)
		}
	}
	return runs, off, nil
}

func parseRecord(b []byte) (run, bool) {
	if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) || binary.LittleEndian.Uint32(b[20:]) != 0 {
		return run{}, false
	}
	return run{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}, true
}

// LockDir locks an overlay directory without opening an overlay in it
// (a recovery that has switched: its overlay is being deleted). Closing
// the returned file releases it.
func LockDir(dir string) (*os.File, error) {
	f, err := fsutil.Lock(filepath.Join(dir, lockName))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("overlay %s: %w", dir, ErrInUse)
	}
	return f, err
}

// RemoveFiles deletes what is left of an overlay in dir (held by LockDir).
func RemoveFiles(dir string) error {
	for _, n := range []string{dataName, journalName, metaName} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return fsutil.SyncDir(dir)
}

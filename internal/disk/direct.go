package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// ErrLayerChanged: a file a direct reader relies on changed under it (a
// consolidation merged into the snapshot's chain, the snapshot went away,
// or disk.meta names other layers than when the reader opened). Data read
// since the last successful check cannot be trusted.
var ErrLayerChanged = errors.New("layer changed under the reader")

// ErrForeignDatastore: a directory's datastore.meta is not the one the
// host uses, so its files are not the host's disks.
var ErrForeignDatastore = errors.New("datastore is not the host's")

// DirectSnapshot reads a snapshot straight from a datastore directory
// (the san transport), without the disk's lock and without its journal.
// That is sound because every layer up to and including a snapshot's
// frozen layer is immutable, their map files were written by the
// snapshot's checkpoint, and only a consolidation of a snapshot below can
// change them; that case is refused at open and detected afterwards by
// re-reading disk.meta whenever its identity changes.
type DirectSnapshot struct {
	fs    vfs.FS
	dir   string
	id    string
	size  int64
	grain int64
	chain []*layer
	// names are the chain's files as disk.meta named them at open.
	names []layerMeta

	mu   sync.Mutex
	meta os.FileInfo // disk.meta as last verified
}

var _ io.ReaderAt = (*DirectSnapshot)(nil)

// DatastoreID reads the identity of the datastore in dir without creating
// anything (OpenDatastore would initialise an empty directory).
func DatastoreID(dir string, opts ...DatastoreOption) (string, error) {
	p := filepath.Join(dir, dsMetaName)
	if _, err := fsOf(opts).Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	ds, err := OpenDatastore(dir, opts...)
	if err != nil {
		return "", err
	}
	return ds.ID(), nil
}

// OpenSnapshotDirect opens snapshot snapID of disk diskName in the
// datastore directory dir, read-only.
func OpenSnapshotDirect(dir, diskName, snapID string, opts ...DatastoreOption) (*DirectSnapshot, error) {
	if err := ValidName(diskName); err != nil {
		return nil, err
	}
	s := &DirectSnapshot{fs: fsOf(opts), dir: filepath.Join(dir, diskName), id: snapID}
	m, fi, err := s.readMeta()
	if err != nil {
		return nil, err
	}
	names, sm, err := snapshotChain(m, snapID)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", diskName, err)
	}
	s.size, s.grain, s.names, s.meta = sm.Size, m.Grain, names, fi
	for i, lm := range names {
		l, err := openLayerRO(s.fs, s.dir, lm, i == 0, m.Grain)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("disk %s snapshot %s: %w", diskName, snapID, err)
		}
		s.chain = append(s.chain, l)
	}
	// The maps may have been replaced between reading disk.meta and
	// opening them: verify before the first read.
	if err := s.Check(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// readMeta decodes disk.meta and returns its identity for later checks.
func (s *DirectSnapshot) readMeta() (*diskMeta, os.FileInfo, error) {
	p := filepath.Join(s.dir, metaName)
	f, err := vfs.Open(s.fs, p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data := make([]byte, fi.Size())
	if err := fsutil.ReadFull(f, data, 0); err != nil {
		return nil, nil, err
	}
	m, err := decodeMeta(p, data)
	return m, fi, err
}

// snapshotChain is the layers of snapshot id, bottom first, refusing a
// consolidation that touches them.
func snapshotChain(m *diskMeta, id string) ([]layerMeta, *snapMeta, error) {
	_, sm := m.snapshot(id)
	if sm == nil {
		return nil, nil, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	}
	top := m.layerIndex(sm.Layer)
	if mg := m.Merge; mg != nil {
		if p := m.layerIndex(mg.Parent); p >= 0 && p <= top {
			return nil, nil, fmt.Errorf("snapshot %s: %w: consolidation of %s merges layer %d into %d",
				id, ErrLayerChanged, mg.Snapshot, mg.Child, mg.Parent)
		}
	}
	return slices.Clone(m.Layers[:top+1]), sm, nil
}

func openLayerRO(fsys vfs.FS, dir string, lm layerMeta, flat bool, grain int64) (*layer, error) {
	f, err := vfs.Open(fsys, filepath.Join(dir, lm.Data))
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w: %w", lm.ID, ErrLayerChanged, err)
	}
	l := newLayer(lm.ID, f, flat)
	if flat {
		return l, nil
	}
	p := filepath.Join(dir, lm.Map)
	data, err := vfs.ReadFile(fsys, p)
	if err == nil {
		err = l.decodeMap(p, grain, data)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %d map: %w: %w", lm.ID, ErrLayerChanged, err)
	}
	return l, nil
}

// Check verifies that disk.meta still describes the chain the reader
// opened. It costs one stat while disk.meta is unchanged.
func (s *DirectSnapshot) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := s.fs.Stat(filepath.Join(s.dir, metaName))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLayerChanged, err)
	}
	if sameFile(fi, s.meta) {
		return nil
	}
	m, fi, err := s.readMeta()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLayerChanged, err)
	}
	names, _, err := snapshotChain(m, s.id)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLayerChanged, err)
	}
	if !slices.Equal(names, s.names) {
		return fmt.Errorf("snapshot %s: %w: its layers are now %v, were %v", s.id, ErrLayerChanged, names, s.names)
	}
	s.meta = fi
	return nil
}

// sameFile: disk.meta is replaced by rename, so a new commit is a new inode.
// (Off the OS file system os.SameFile is false: every check re-reads.)
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Size is the snapshot's size in bytes.
func (s *DirectSnapshot) Size() int64 { return s.size }

// ReadAt reads the snapshot's bytes, then checks that nothing changed
// under the read, so a returned nil means the bytes are the snapshot's.
func (s *DirectSnapshot) ReadAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, int64(len(p)), s.size); err != nil {
		return 0, err
	}
	if err := s.readChain(p, off); err != nil {
		return 0, err
	}
	if err := s.Check(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readChain mirrors Disk.readChain over the reader's own layers; past
// the end of a layer file reads as zeroes (fsutil.ReadFull).
func (s *DirectSnapshot) readChain(p []byte, off int64) error {
	if len(s.chain) == 1 {
		return fsutil.ReadFull(s.chain[0].f, p, off)
	}
	end := off + int64(len(p))
	g0, g1 := uint64(off/s.grain), uint64((end+s.grain-1)/s.grain)
	for _, r := range resolve(s.chain, g0, g1) {
		a := max(off, int64(r.g0)*s.grain)
		b := min(end, int64(r.g1)*s.grain)
		buf := p[a-off : b-off]
		if r.st == zeroed {
			clear(buf)
			continue
		}
		if err := fsutil.ReadFull(s.chain[r.src].f, buf, a); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the files.
func (s *DirectSnapshot) Close() error {
	for _, l := range s.chain {
		l.f.Close()
	}
	s.chain = nil
	return nil
}

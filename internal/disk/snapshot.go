package disk

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	ID          string
	Description string
	Created     time.Time
	Size        int64
	ChangeID    string // the change ID of the disk's state at the snapshot ("" without CBT)
	// Root is the snapshot image's hash-tree root (docs/format.md H3),
	// TreeBlockSize its leaf unit; zero while the tree is computed or
	// when the disk keeps none (SnapshotTree waits for it).
	Root          hashtree.Hash
	TreeBlockSize int
}

func (d *Disk) snapInfo(s snapMeta) SnapshotInfo {
	info := SnapshotInfo{ID: s.ID, Description: s.Description, Created: s.Created, Size: s.Size}
	if d.tracker != nil {
		info.ChangeID = fmt.Sprintf("%s/%d", s.ChangeUUID, s.ChangeSeq)
	}
	d.trees.info(&info)
	return info
}

// CreateSnapshot freezes the disk's current state as snapshot id (a name;
// "" picks one) and starts a new delta for live writes. Writes in flight
// finish before it and belong to the snapshot; later ones do not.
//
// Guest I/O stops only for an in-memory switch (snapfast.go): the new
// generation's files are prepared before it and committed after it, while
// writes go on into the new delta. Invariant 5 (docs/format.md).
func (d *Disk) CreateSnapshot(id, description string) (SnapshotInfo, error) {
	// deleteMu: no consolidation starts (commitDelete writes disk.meta
	// under the shared barrier) until this generation is committed.
	d.deleteMu.Lock()
	defer d.deleteMu.Unlock()
	p, err := d.prepareSnapshot(len(id) + 2*len(description))
	if err != nil {
		return SnapshotInfo{}, err
	}
	d.snapStepHook(0)
	info, c, err := d.freezeSnapshot(id, description, p)
	if err != nil || c == nil { // refused, or taken the slow way
		return info, err
	}
	d.snapStepHook(1)
	if err := d.commitSnapshot(c); err != nil {
		return SnapshotInfo{}, err
	}
	d.trees.enqueue(info.ID) // computed in the background (T2): not waited for here
	return info, nil
}

// createLocked takes the snapshot with a checkpoint under the exclusive
// barrier (held by the caller): the slow way, when the files prepared
// outside it no longer fit. It changes nothing if it fails.
func (d *Disk) createLocked(id, description string) (SnapshotInfo, error) {
	m, s, err := d.snapshotMeta(id, description)
	if err != nil {
		return SnapshotInfo{}, err
	}
	nl, err := d.newDelta(m.NextID - 1)
	if err != nil {
		return SnapshotInfo{}, noSpace(err)
	}
	chain := append(append([]*layer(nil), d.chain...), nl)
	if err := d.checkpoint(m, chain, d.tracker != nil); err != nil {
		nl.f.Close()
		d.fs.Remove(nl.f.Name()) // not committed: the disk is as it was
		return SnapshotInfo{}, err
	}
	d.trees.enqueue(s.ID)
	return d.snapInfo(s), nil
}

// snapshotMeta checks that snapshot id can be taken now and returns the
// disk.meta that records it over a new top layer (ID m.NextID-1) and
// the snapshot. Exclusive barrier held.
func (d *Disk) snapshotMeta(id, description string) (*diskMeta, snapMeta, error) {
	if d.closed {
		return nil, snapMeta{}, ErrClosed
	}
	if d.merge != nil {
		return nil, snapMeta{}, fmt.Errorf("%w: a consolidation is in progress", ErrBusy)
	}
	m := d.meta.clone()
	if id == "" {
		id = fmt.Sprintf("snap-%d", m.NextID)
	}
	if err := ValidName(id); err != nil {
		return nil, snapMeta{}, err
	}
	if _, s := m.snapshot(id); s != nil {
		return nil, snapMeta{}, fmt.Errorf("snapshot %s: %w", id, ErrExists)
	}
	top := d.chain[len(d.chain)-1]
	s := snapMeta{ID: id, Description: description, Created: time.Now().UTC(), Layer: top.id, Size: d.size}
	if d.tracker != nil {
		s.ChangeSeq = d.tracker.Current().Seq + 1
		s.ChangeUUID = d.tracker.UUID()
	}
	m.Snapshots = append(m.Snapshots, s)
	m.Layers = append(m.Layers, layerMeta{ID: m.NextID, Data: deltaName(m.NextID)})
	m.NextID++
	return m, s, nil
}

// newDelta creates an empty delta file of the disk's size.
func (d *Disk) newDelta(id uint64) (*layer, error) {
	p := filepath.Join(d.dir, deltaName(id))
	f, err := d.fs.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(d.size); err != nil {
		f.Close()
		return nil, err
	}
	return newLayer(id, f, false), nil
}

// Snapshots lists the snapshots, oldest first.
func (d *Disk) Snapshots() []SnapshotInfo {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	var out []SnapshotInfo
	for _, s := range d.meta.Snapshots {
		out = append(out, d.snapInfo(s))
	}
	return out
}

// Snapshot is an open read-only view of a snapshot.
type Snapshot struct {
	d    *Disk
	info SnapshotInfo
	done bool
}

var _ io.ReaderAt = (*Snapshot)(nil)

// OpenSnapshot opens a view; the snapshot cannot be deleted while open.
func (d *Disk) OpenSnapshot(id string) (*Snapshot, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	_, s := d.meta.snapshot(id)
	if s == nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	}
	d.mu.Lock()
	d.mu.views[id]++
	d.mu.Unlock()
	return &Snapshot{d: d, info: d.snapInfo(*s)}, nil
}

// Info describes the snapshot.
func (s *Snapshot) Info() SnapshotInfo { return s.info }

// Size is the disk's size when the snapshot was taken.
func (s *Snapshot) Size() int64 { return s.info.Size }

// chainLocked is the snapshot's chain now (its frozen layer may have been
// replaced by consolidation of the snapshot below). Shared barrier held.
func (s *Snapshot) chainLocked() ([]*layer, *snapMeta, error) {
	if s.done || s.d.closed {
		return nil, nil, ErrClosed
	}
	_, sm := s.d.meta.snapshot(s.info.ID)
	if sm == nil {
		return nil, nil, fmt.Errorf("snapshot %s: %w", s.info.ID, ErrNotFound)
	}
	return s.d.chain[:s.d.meta.layerIndex(sm.Layer)+1], sm, nil
}

// ReadAt reads the snapshot's data.
func (s *Snapshot) ReadAt(p []byte, off int64) (int, error) {
	s.d.barrier.RLock()
	defer s.d.barrier.RUnlock()
	return s.readLocked(p, off, readFull)
}

// readLocked reads the snapshot's layers with rd; the caller holds the
// barrier shared.
func (s *Snapshot) readLocked(p []byte, off int64, rd readFunc) (int, error) {
	chain, sm, err := s.chainLocked()
	if err != nil {
		return 0, err
	}
	if err := checkRange(off, int64(len(p)), sm.Size); err != nil {
		return 0, err
	}
	if err := s.d.readChainBy(chain, p, off, rd); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close releases the view.
func (s *Snapshot) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	s.d.mu.Lock()
	s.d.mu.views[s.info.ID]--
	if s.d.mu.views[s.info.ID] == 0 {
		delete(s.d.mu.views, s.info.ID)
	}
	s.d.mu.Unlock()
	return nil
}

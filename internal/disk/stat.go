package disk

import (
	"fmt"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Grow extends the disk to size bytes. The new area reads as zeroes and
// counts as changed for every earlier change ID.
//
// Invariants 7 and 7a (docs/format.md): the size is disk.meta's alone,
// taken in memory only once the checkpoint committed it.
func (d *Disk) Grow(size int64) error {
	d.barrier.Lock()
	defer d.barrier.Unlock()
	if d.closed {
		return ErrClosed
	}
	switch {
	case size < d.size:
		return fmt.Errorf("%w: %d < %d", ErrShrink, size, d.size)
	case size == d.size:
		return nil
	case size%Sector != 0:
		return fmt.Errorf("%w: size %d", ErrMisaligned, size)
	case (size+d.grain-1)/d.grain > 1<<32-1:
		return fmt.Errorf("%w: size %d too large for grain %d", ErrOutOfRange, size, d.grain)
	}
	top := d.chain[len(d.chain)-1]
	if err := top.f.Truncate(size); err != nil {
		return noSpace(err)
	}
	if top.flat {
		if _, err := reserve(top.f, d.meta.Provision, d.size, size-d.size); err != nil {
			top.f.Truncate(d.size)
			return noSpace(err)
		}
	}
	top.written.Store(true)
	if d.tracker != nil {
		d.tracker.Grow(size)
	}
	m := d.meta.clone()
	m.Size = size
	if err := d.checkpoint(m, d.chain, false); err != nil {
		return err
	}
	d.size = size
	return nil
}

// ResetCBT gives change tracking a new identity: every earlier change ID
// becomes invalid (the next backup must be full).
func (d *Disk) ResetCBT() error {
	d.barrier.Lock()
	defer d.barrier.Unlock()
	if d.tracker == nil {
		return ErrCBTDisabled
	}
	d.tracker.Reset()
	return d.checkpoint(d.meta.clone(), d.chain, false)
}

// Stat describes a disk.
type Stat struct {
	Name      string
	UUID      string
	Size      int64 // provisioned bytes
	Allocated int64 // bytes allocated in all layer files
	// Unique is the allocated bytes no snapshot and no other disk (a
	// linked clone, or the disk this one was cloned from) uses: the live
	// layers' files that only this disk links. What deleting every
	// snapshot and then the disk would give back at least.
	Unique int64
	// Shared is the allocated bytes in layer files another disk links too.
	Shared        int64
	Provision     Provision
	Grain         int64
	Layers        int
	Snapshots     []SnapshotInfo
	CBT           *cbt.Stats // nil when disabled
	ChangeID      string     // current change ID ("" without CBT)
	Consolidating string     // snapshot being consolidated, or ""
	MergeProgress [2]int64   // grains merged, grains to merge
	Agent         string     // guest agent socket for quiescing, or ""
}

// Stat reports the disk's state.
func (d *Disk) Stat() (Stat, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return Stat{}, ErrClosed
	}
	s := Stat{Name: d.meta.Name, UUID: d.meta.UUID, Size: d.size, Grain: d.grain, Layers: len(d.chain), Agent: d.meta.Agent}
	s.Provision = ProvisionThin
	if d.meta.Provision != "" {
		s.Provision = d.meta.Provision
	}
	frozen := -1 // index of the highest layer a snapshot uses
	for _, sm := range d.meta.Snapshots {
		frozen = max(frozen, d.meta.layerIndex(sm.Layer))
	}
	for i, l := range d.chain {
		n, err := vfs.Allocated(l.f)
		if err != nil {
			return Stat{}, err
		}
		s.Allocated += n
		switch {
		case vfs.Links(l.f) > 1:
			s.Shared += n
		case i > frozen:
			s.Unique += n
		}
	}
	for _, sm := range d.meta.Snapshots {
		s.Snapshots = append(s.Snapshots, d.snapInfo(sm))
	}
	if d.tracker != nil {
		cs := d.tracker.Stats()
		s.CBT, s.ChangeID = &cs, cs.Current.String()
	}
	if d.meta.Merge != nil {
		s.Consolidating = d.meta.Merge.Snapshot
		if t := d.Consolidation(); t != nil {
			s.MergeProgress[0], s.MergeProgress[1] = t.Progress()
		}
	}
	return s, nil
}

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	return d.size
}

// CurrentChangeID is the change ID of the last snapshot's state (or the
// disk's creation). Used as "since", it over-reports writes made after it
// and never misses one.
func (d *Disk) CurrentChangeID() (string, error) {
	if d.tracker == nil {
		return "", ErrCBTDisabled
	}
	return d.tracker.Current().String(), nil
}

package disk

import (
	"fmt"
)

// Check verifies the disk's invariants: the chain matches disk.meta, no
// grain is both present and zero, no delta holds grains past the end,
// every snapshot names a layer of the chain, and CBT sequences are
// consistent. It returns the first violation, wrapped in ErrCorrupt.
func (d *Disk) Check() error {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := d.meta.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(d.chain) != len(d.meta.Layers) {
		return fmt.Errorf("%w: %d layers open, %d in disk.meta", ErrCorrupt, len(d.chain), len(d.meta.Layers))
	}
	last := uint64((d.size + d.grain - 1) / d.grain)
	for i, l := range d.chain {
		if l.id != d.meta.Layers[i].ID || l.flat != (i == 0) {
			return fmt.Errorf("%w: layer %d out of place", ErrCorrupt, l.id)
		}
		if err := l.check(last); err != nil {
			return err
		}
	}
	for _, s := range d.meta.Snapshots {
		if d.tracker != nil && s.ChangeSeq > d.tracker.Current().Seq {
			return fmt.Errorf("%w: snapshot %s change sequence %d ahead of tracker", ErrCorrupt, s.ID, s.ChangeSeq)
		}
		if s.Size > d.size {
			return fmt.Errorf("%w: snapshot %s larger than disk", ErrCorrupt, s.ID)
		}
	}
	if (d.merge == nil) != (d.meta.Merge == nil) {
		return fmt.Errorf("%w: consolidation state differs from disk.meta", ErrCorrupt)
	}
	return nil
}

func (l *layer) check(grains uint64) error {
	if l.flat {
		return nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.mu.present.Intersects(l.mu.zero) {
		return fmt.Errorf("%w: layer %d has grains both present and zero", ErrCorrupt, l.id)
	}
	for _, bm := range []interface {
		Maximum() uint32
		IsEmpty() bool
	}{l.mu.present, l.mu.zero} {
		if !bm.IsEmpty() && uint64(bm.Maximum()) >= grains {
			return fmt.Errorf("%w: layer %d holds grain %d past the end", ErrCorrupt, l.id, bm.Maximum())
		}
	}
	return nil
}

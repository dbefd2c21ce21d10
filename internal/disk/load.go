package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// load reads disk.meta, the layers and their maps, the CBT checkpoint,
// and replays the journal of the current generation.
func (d *Disk) load() error {
	p := filepath.Join(d.dir, metaName)
	data, err := vfs.ReadFile(d.fs, p)
	if err != nil {
		return err
	}
	m, err := decodeMeta(p, data)
	if err != nil {
		return err
	}
	d.meta, d.size, d.grain = m, m.Size, m.Grain
	byID := map[uint64]*layer{}
	for i, lm := range m.Layers {
		l, err := d.openLayer(lm, i == 0)
		if err != nil {
			return err
		}
		d.chain = append(d.chain, l)
		byID[l.id] = l
	}
	if m.CBT != nil {
		p := filepath.Join(d.dir, m.CBT.Checkpoint)
		data, err := vfs.ReadFile(d.fs, p)
		if err != nil {
			return err
		}
		if d.tracker, err = cbt.Decode(p, data, cbt.LogFunc(d.logIntent)); err != nil {
			return err
		}
	}
	replayed, err := d.replay(byID)
	if err != nil {
		return err
	}
	if m.Merge != nil {
		c := m.layerIndex(m.Merge.Child)
		d.merge = &mergeState{child: d.chain[c], parent: d.chain[c-1], live: c == len(d.chain)-1, total: m.Merge.Total}
	}
	d.gc()
	if replayed {
		// Fold the replayed journal (and recovered intents) into a
		// checkpoint so a second crash starts from a settled state. On a
		// full datastore the disk opens on the replayed journal instead;
		// a later checkpoint folds it.
		err := d.checkpoint(d.meta.clone(), d.chain, false)
		if errors.Is(err, ErrNoSpace) {
			return nil
		}
		return err
	}
	return nil
}

func (d *Disk) openLayer(lm layerMeta, flat bool) (*layer, error) {
	f, err := d.fs.OpenFile(filepath.Join(d.dir, lm.Data), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", lm.ID, err)
	}
	l := newLayer(lm.ID, f, flat)
	if flat {
		return l, nil
	}
	p := filepath.Join(d.dir, lm.Map)
	data, err := vfs.ReadFile(d.fs, p)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %d map: %w", lm.ID, err)
	}
	if err := l.decodeMap(p, d.grain, data); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// replay applies the journal; it reports whether there was anything in it.
func (d *Disk) replay(byID map[uint64]*layer) (bool, error) {
	p := filepath.Join(d.dir, journalName(d.meta.Gen))
	log, recs, err := journal.Open(d.fs, p, d.meta.Gen)
	if err != nil {
		return false, err
	}
	d.log = log
	for _, r := range recs {
		switch {
		case r.Type == recLayer:
			err = applyRecord(r.Payload, byID)
		case d.tracker != nil && (r.Type == cbt.RecordFine || r.Type == cbt.RecordIntent):
			err = d.tracker.Apply(r.Type, r.Payload)
		default:
			err = fmt.Errorf("%w: unknown record type %#x", ErrCorrupt, r.Type)
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", p, err)
		}
	}
	if d.tracker != nil {
		d.tracker.Recover()
	}
	return len(recs) > 0, nil
}

// logIntent makes a CBT intent record durable. It runs under the shared
// barrier (inside a write), so d.log is stable. A failed append (a full
// file system) leaves the journal as it was, so its error goes back as is
// and the write can be retried; a failed sync may have lost records the
// journal already holds, so it fails the disk (and, not matching ENOSPC,
// the tracker).
//
// Invariant 1 (docs/format.md): the intent is durable before the write.
func (d *Disk) logIntent(payload []byte) error {
	if err := d.log.Append(journal.Record{Type: cbt.RecordIntent, Payload: payload}); err != nil {
		return err
	}
	if err := d.log.Sync(); err != nil {
		return d.fail(err)
	}
	return nil
}

// gc removes files of this disk that disk.meta does not name: leftovers of
// an interrupted checkpoint, replaced maps, merged layers.
func (d *Disk) gc() {
	keep := map[string]bool{metaName: true, lockName: true, journalName(d.meta.Gen): true}
	for _, l := range d.meta.Layers {
		keep[l.Data], keep[l.Map] = true, true
	}
	if d.meta.CBT != nil {
		keep[d.meta.CBT.Checkpoint] = true
	}
	ents, err := d.fs.ReadDir(d.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if !keep[n] && (validFile(n) || strings.HasPrefix(n, ".")) {
			d.fs.Remove(filepath.Join(d.dir, n))
		}
	}
}

func (d *Disk) closeFiles() {
	for _, l := range d.chain {
		l.f.Close()
	}
	if d.log != nil {
		d.log.Close()
	}
	if d.lock != nil {
		d.lock.Close()
	}
}

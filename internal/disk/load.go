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
	d.meta, d.size, d.grain = m, m.Size, m.Grain // the size: invariant 7a
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
	if m := d.meta; m.Merge != nil { // replay may have ended it
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
		if !errors.Is(err, ErrNoSpace) {
			return err // the new journal has its session record
		}
	}
	if err := d.startSession(d.log); err != nil {
		return err
	}
	d.log.Reserve(d.reserve)
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

// replay applies the journal; it reports whether there was anything in it
// besides session records.
func (d *Disk) replay(byID map[uint64]*layer) (bool, error) {
	p := filepath.Join(d.dir, journalName(d.meta.Gen))
	log, recs, err := journal.Open(d.fs, p, d.meta.Gen)
	if err != nil {
		return false, err
	}
	d.log = log
	var cbtRecs []cbt.Record
	replayed := false
	for _, r := range recs {
		switch {
		case r.Type == recLayer:
			err = applyRecord(r.Payload, byID)
		case r.Type == recDrop:
			err = d.replayDrop(r.Payload, byID)
		case r.Type == cbt.RecordSession && d.tracker == nil:
		case d.tracker != nil && isCBTRecord(r.Type):
			cbtRecs = append(cbtRecs, cbt.Record{Type: r.Type, Payload: r.Payload})
		default:
			err = fmt.Errorf("%w: unknown record type %#x", ErrCorrupt, r.Type)
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", p, err)
		}
		replayed = replayed || r.Type != cbt.RecordSession
	}
	if d.tracker != nil {
		if _, err := d.tracker.Replay(d.boot, cbtRecs); err != nil {
			return false, fmt.Errorf("%s: %w", p, err)
		}
	}
	return replayed, nil
}

func isCBTRecord(typ byte) bool {
	switch typ {
	case cbt.RecordFine, cbt.RecordIntent, cbt.RecordSession, cbt.RecordBlocks, cbt.RecordRegionsOnly:
		return true
	}
	return false
}

// startSession appends the CBT session record (this machine's boot ID) to
// log, which this process is about to write to: the block records after
// it are trusted only under the same boot ID (invariant 1a). It needs no
// sync: a block record is only trusted while the page cache that holds
// both survives. If the file system is full the session is not marked,
// and the records that follow count for the session before them (or for
// none): that can only make recovery coarser, never miss a change, since
// boot IDs never repeat.
func (d *Disk) startSession(log *journal.Log) error {
	if d.tracker == nil {
		return nil
	}
	r := cbt.SessionRecord(d.boot)
	err := log.Append(journal.Record{Type: r.Type, Payload: r.Payload})
	if errors.Is(noSpace(err), ErrNoSpace) {
		return nil
	}
	return err
}

// logIntent appends CBT intent records, and syncs them when the tracker
// asks (a new region). It runs under the shared barrier (inside a write),
// so d.log is stable. A failed append (a full file system) leaves the
// journal as it was, so its error goes back as is and the write can be
// retried; a failed sync may have lost records the journal already holds,
// so it fails the disk (and, not matching ENOSPC, the tracker).
//
// Invariants 1 and 1a (docs/format.md): a region record is durable, a
// block record written, before the data write. When the journal's reserve
// runs short on a full file system, block records are refused
// (cbt.ErrRegionsOnly) so that what is left holds the tracker's
// RecordRegionsOnly and region records.
func (d *Disk) logIntent(recs []cbt.Record, sync bool) error {
	jr := make([]journal.Record, len(recs))
	for i, r := range recs {
		if r.Type == cbt.RecordBlocks && d.log.Short() {
			return cbt.ErrRegionsOnly
		}
		jr[i] = journal.Record{Type: r.Type, Payload: r.Payload}
	}
	if err := d.log.Append(jr...); err != nil {
		return err
	}
	if !sync {
		return nil
	}
	if err := d.log.Sync(); err != nil {
		return d.fail(err)
	}
	return nil
}

// gc removes files of this disk that disk.meta does not name: leftovers of
// an interrupted checkpoint, replaced maps, merged layers.
func (d *Disk) gc() {
	keep := map[string]bool{metaName: true, lockName: true, journalName(d.meta.Gen): true, treeDirName: true}
	for _, n := range d.dropped { // disk.meta still names them
		keep[n] = true
	}
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

package disk

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// checkpoint commits m (the next structure of the disk) with chain as its
// layers. Caller holds the exclusive barrier. Order: data fsync → new maps,
// CBT checkpoint and empty journal of generation gen+1 (each synced) →
// disk.meta replaced atomically (the commit) → old files removed. A crash
// anywhere before the rename leaves generation gen intact.
//
// A failure before the rename (a full file system, typically) changes
// nothing either: the new files are removed, the in-memory state is still
// generation gen's and its journal keeps taking flushes, so the error is
// returned for this request only and a later checkpoint retries. Only a
// failed data sync (the kernel may have dropped dirty pages) or a failure
// after the rename (disk.meta may name either generation) fail the disk.
//
// Invariants 4 and 8 (docs/format.md): the commit is the rename of
// disk.meta; a full file system before it changes nothing.
func (d *Disk) checkpoint(m *diskMeta, chain []*layer, closeEpoch bool) error {
	d.waitCommit() // a snapshot's generation first
	if err := d.failed(); err != nil {
		return err
	}
	gen := d.meta.Gen + 1
	m.Gen = gen
	if err := d.syncData(chain); err != nil {
		return d.fail(err)
	}
	log, err := d.commitGeneration(m, chain, closeEpoch)
	frees := m.Merge != nil || len(chain) < len(d.chain) // a consolidation's checkpoint
	if frees && errors.Is(noSpace(err), ErrNoSpace) && d.log.Release() == nil {
		// A full file system: the journal's reserve is given back for the
		// new generation's few files (the new journal takes its own
		// reserve after the commit). Deleting a snapshot, the way to free
		// space, must work when nothing is free (TestNoSpaceLoopFS);
		// anything else (a snapshot, a grow) waits for space, keeping the
		// reserve for CBT.
		log, err = d.commitGeneration(m, chain, closeEpoch)
		if err != nil {
			d.log.Reserve(d.reserve) // best effort; Short tells CBT if it is not there
		}
	}
	if err != nil {
		return noSpace(fmt.Errorf("checkpoint %d: %w", gen, err))
	}
	if err := vfs.SyncDir(d.fs, d.dir); err != nil { // the commit
		log.Close()
		return d.fail(err)
	}
	d.committed(m, chain, log, closeEpoch)
	return nil
}

// commitGeneration writes generation m.Gen's files and renames disk.meta
// over the old one. On failure it removes what it wrote: nothing changed.
func (d *Disk) commitGeneration(m *diskMeta, chain []*layer, closeEpoch bool) (*journal.Log, error) {
	log, files, err := d.writeGeneration(m, chain, closeEpoch)
	if err == nil {
		err = vfs.SyncDir(d.fs, d.dir)
	}
	if err == nil {
		err = d.fs.Rename(files[len(files)-1], filepath.Join(d.dir, metaName))
	}
	if err != nil {
		if log != nil {
			log.Close()
		}
		for _, f := range files {
			d.fs.Remove(f)
		}
		return nil, err
	}
	return log, nil
}

// writeGeneration writes generation m.Gen's new maps, CBT checkpoint,
// empty journal and disk.meta's next content (a synced temporary file
// beside it, a dot name, last in the paths), and returns the journal and
// the paths it created. The files have names of their own: a crash
// leaves them as garbage for gc, and their syncs overlap (the temporary
// disk.meta's too: nothing reads it before the rename, which comes after
// every sync), one fsync's wait under the exclusive barrier in all.
func (d *Disk) writeGeneration(m *diskMeta, chain []*layer, closeEpoch bool) (*journal.Log, []string, error) {
	var g errgroup.Group
	var files []string
	for i, l := range chain {
		if l.flat || (!l.dirtyMap() && m.Layers[i].Map != "") {
			continue
		}
		m.Layers[i].Map = mapName(l.id, m.Gen)
		p, data := filepath.Join(d.dir, m.Layers[i].Map), l.encodeMap(d.grain)
		files = append(files, p)
		g.Go(func() error { return vfs.WriteNew(d.fs, p, data) })
	}
	if d.tracker != nil {
		m.CBT = &cbtMeta{Checkpoint: cbtName(m.Gen)}
		p, data := filepath.Join(d.dir, m.CBT.Checkpoint), d.tracker.Encode(closeEpoch)
		files = append(files, p)
		g.Go(func() error { return vfs.WriteNew(d.fs, p, data) })
	}
	var log *journal.Log
	jp := filepath.Join(d.dir, journalName(m.Gen))
	files = append(files, jp)
	g.Go(func() (err error) {
		if log, err = journal.Create(d.fs, jp, m.Gen); err != nil {
			return err
		}
		return d.startSession(log)
	})
	tmp, data := filepath.Join(d.dir, "."+metaName+".tmp"), m.encode() // after the names above
	files = append(files, tmp)
	g.Go(func() error { return vfs.WriteNew(d.fs, tmp, data) })
	return log, files, g.Wait()
}

// committed switches the in-memory state to a durable checkpoint.
func (d *Disk) committed(m *diskMeta, chain []*layer, log *journal.Log, closeEpoch bool) {
	for _, l := range chain {
		l.clearChanges()
	}
	if d.tracker != nil {
		d.tracker.Committed(closeEpoch)
	}
	d.log.Close()
	d.log, d.meta, d.chain = log, m, chain
	d.dropped = nil // the new disk.meta no longer names them
	d.gc()
	d.log.Reserve(d.reserve) // after the commit and gc: the checkpoint's files come first
}

func (d *Disk) syncData(chain []*layer) error {
	for _, l := range chain {
		if l.written.Swap(false) {
			if err := vfs.Datasync(l.f); err != nil {
				l.written.Store(true)
				return err
			}
		}
	}
	return nil
}

// presync flushes the chain's data files without stopping I/O, so the
// checkpoint that follows under the exclusive barrier finds little left to
// sync: the guest's pause is metadata, not the dirty data of a whole epoch.
//
// It waits for a flush in progress (flushMu) too: an exclusive Lock taken
// while a flush still syncs, say, a consolidation's merged data under the
// shared barrier would wait for that sync, and every guest write would
// queue behind the waiting Lock (Go's RWMutex admits no new reader then):
// that was the seconds-long stall of BenchmarkConsolidate.
func (d *Disk) presync() {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return
	}
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	for _, l := range d.chain {
		if l.written.Load() {
			vfs.Datasync(l.f) // best effort: the checkpoint syncs again
		}
	}
}

// lockExclusive takes the exclusive barrier without stopping I/O while
// it waits: flushes in progress finish (writes go on meanwhile, as no
// writer waits on the barrier yet), new ones wait at flushGate, and only
// then is the barrier asked for, so what it waits for is writes in
// flight, not a flush's data sync. Release with d.barrier.Unlock. The
// caller holds neither the barrier nor flushGate. Invariant 6
// (docs/format.md).
func (d *Disk) lockExclusive() {
	d.flushGate.Lock()
	d.barrier.Lock()
	d.flushGate.Unlock()
}

// fail makes a metadata failure sticky: the in-memory state may be ahead
// of what is durable, so further writes are refused until reopened.
func (d *Disk) fail(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.err == nil {
		d.mu.err = fmt.Errorf("%w: %v", ErrFailed, err)
	}
	return d.mu.err
}

func (d *Disk) failed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.err
}

// Flush makes every write completed before it durable: data files first,
// then the map and CBT changes that describe them, in one journal sync.
func (d *Disk) Flush() error {
	d.flushGate.RLock()
	d.barrier.RLock()
	err := d.flushLocked()
	big := d.log != nil && d.log.Size() > journalLimit
	d.barrier.RUnlock()
	d.flushGate.RUnlock() // before Checkpoint, which takes it
	if err == nil && big {
		// The flush is durable already; a checkpoint that finds no space
		// is retried at the next flush.
		if err = d.Checkpoint(); errors.Is(err, ErrNoSpace) {
			err = nil
		}
	}
	return err
}

// Invariant 3 (docs/format.md): data synced before the records naming it.
func (d *Disk) flushLocked() error {
	if d.closed {
		return ErrClosed
	}
	d.waitCommit() // its records go to a journal a snapshot is committing
	if err := d.failed(); err != nil {
		return err
	}
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	recs, taken := d.takeRecords()
	// CBT adds nothing here: its intents, durable before the writes they
	// cover, already stand for every block changed since the checkpoint.
	if err := d.syncData(d.chain); err != nil {
		return d.fail(err)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := d.log.Append(recs...); err != nil {
		if err = noSpace(err); !errors.Is(err, ErrNoSpace) {
			return d.fail(err)
		}
		// Nothing was appended (journal.Append is all or nothing): give
		// the changes back so the next flush records them.
		for _, t := range taken {
			t.l.untake(t.changed)
		}
		return err
	}
	if err := d.log.Sync(); err != nil {
		return d.fail(err)
	}
	return nil
}

// takeRecords takes the layer records of a flush, before it syncs data:
// every bit in them was set after its data write completed (and its
// layer marked written), so the data sync that follows covers it.
//
// They are taken as one cut, under cutMu: a consolidation step marks a
// grain in the parent and drops it from the child under the same lock.
// Taken layer by layer, a step falling between the parent's take and the
// child's would make the child's drop durable without the parent's gain,
// and a power loss would then uncover the older data below the parent:
// a flushed write lost.
func (d *Disk) takeRecords() ([]journal.Record, []takenRecord) {
	d.cutMu.Lock()
	defer d.cutMu.Unlock()
	var recs []journal.Record
	var taken []takenRecord
	for _, l := range d.chain {
		if p, changed, ok := l.takeRecord(); ok {
			recs = append(recs, journal.Record{Type: recLayer, Payload: p})
			taken = append(taken, takenRecord{l, changed})
		}
		if d.afterTake != nil {
			d.afterTake(l)
		}
	}
	return recs, taken
}

// Checkpoint folds the journal into new maps and CBT state.
func (d *Disk) Checkpoint() error {
	d.presync()
	d.lockExclusive()
	defer d.barrier.Unlock()
	if d.closed {
		return ErrClosed
	}
	return d.checkpoint(d.meta.clone(), d.chain, false)
}

// Close stops a running consolidation (it resumes at the next Open),
// checkpoints and releases the disk.
func (d *Disk) Close() error {
	d.cancel()
	d.bg.Wait()
	d.presync()
	d.barrier.Lock()
	defer d.barrier.Unlock()
	if d.closed {
		return nil
	}
	err := d.checkpoint(d.meta.clone(), d.chain, false)
	switch {
	case errors.Is(err, ErrFailed):
		err = nil // already reported; the journal state is what is durable
	case errors.Is(err, ErrNoSpace):
		// No room for a new generation: record the map changes in the
		// current journal instead (a few bytes), replayed at the next open.
		err = d.flushLocked()
	}
	d.closed = true
	d.closeFiles()
	return err
}

// Path is the disk's directory.
func (d *Disk) Path() string { return d.dir }

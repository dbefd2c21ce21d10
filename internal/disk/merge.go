package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// mergeState is a consolidation in progress: child merges into parent.
type mergeState struct {
	child, parent *layer
	live          bool  // child is the top: guest writes still arrive
	total         int64 // grains held by child at the start
}

// maxMergeRun bounds the grains copied under one set of grain locks, and
// so the longest a guest write can wait on consolidation.
const maxMergeRun = 64

// A consolidation that finds the datastore full retries after these
// pauses (doubling), so it resumes by itself once space is freed.
const (
	noSpaceBackoff    = 100 * time.Millisecond
	maxNoSpaceBackoff = 5 * time.Second
)

// sleepCtx waits for d or ctx.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// syncEvery grains merged, the merge syncs the data written so far.
const syncEvery = 16384

// Task is a background consolidation.
type Task struct {
	Snapshot string
	total    int64
	done     chan struct{}
	merged   atomic.Int64
	err      error
	// reclaimed: bytes given back, for a reclaim task (reclaim.go).
	reclaimed atomic.Int64
}

// Wait blocks until the task ends or ctx is done.
func (t *Task) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Progress reports grains merged and grains to merge.
func (t *Task) Progress() (done, total int64) { return t.merged.Load(), t.total }

// Done is closed when the task ends.
func (t *Task) Done() <-chan struct{} { return t.done }

// Err is the task's result once Done is closed.
func (t *Task) Err() error { return t.err }

// DeleteSnapshot removes a snapshot: the delta above its layer merges into
// that layer online. It returns at once with the consolidation task; the
// snapshot is gone as soon as it returns. If the disk is closed before the
// task ends, the consolidation resumes at the next Open.
//
// Its start is a commit of disk.meta alone (same generation, maps and
// journal; only the snapshot list and `merge` differ), written while
// guest I/O goes on; while I/O is stopped it only switches the in-memory
// state. Invariant 6 (docs/format.md).
func (d *Disk) DeleteSnapshot(id string) (*Task, error) {
	d.presync()
	d.deleteMu.Lock()
	defer d.deleteMu.Unlock()
	m, err := d.commitDelete(id)
	if errors.Is(err, errSlowDelete) {
		return d.deleteCheckpointed(id)
	}
	if err != nil {
		return nil, err
	}
	d.mergeStepHook(0)
	return d.applyDelete(id, m)
}

// errSlowDelete: the delete takes a checkpoint under the exclusive
// barrier instead (a shared layer to unshare first, or no room).
var errSlowDelete = errors.New("delete by checkpoint")

// commitDelete writes disk.meta without snapshot id and with its merge,
// under the shared barrier: no checkpoint can change the generation
// meanwhile (it needs the exclusive one), and the maps and journal it
// names stay valid: the journal's records name the same layers.
func (d *Disk) commitDelete(id string) (*diskMeta, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	m, parent, err := d.deleteMeta(id)
	if err != nil {
		return nil, err
	}
	// A merge that ended since the last checkpoint left records in this
	// journal that name its child, which disk.meta still holds and m no
	// longer does: replayed against m they would not apply.
	if vfs.Links(parent.f) > 1 || len(d.dropped) > 0 {
		return nil, errSlowDelete
	}
	tmp := filepath.Join(d.dir, "."+metaName+".del")
	err = vfs.WriteNew(d.fs, tmp, m.encode())
	if err == nil {
		err = d.fs.Rename(tmp, filepath.Join(d.dir, metaName))
	}
	if err != nil {
		d.fs.Remove(tmp)
		if errors.Is(noSpace(err), ErrNoSpace) {
			return nil, errSlowDelete // the checkpoint knows how to find room
		}
		return nil, err // disk.meta is the old or the new one: both are sound
	}
	if err := vfs.SyncDir(d.fs, d.dir); err != nil {
		return nil, d.fail(err)
	}
	return m, nil
}

// deleteMeta checks that snapshot id can be deleted now and returns the
// disk.meta that records its deletion, and the layer it merges into.
// Barrier held.
func (d *Disk) deleteMeta(id string) (*diskMeta, *layer, error) {
	if d.closed {
		return nil, nil, ErrClosed
	}
	if d.merge != nil {
		return nil, nil, fmt.Errorf("%w: a consolidation is in progress", ErrBusy)
	}
	i, sm := d.meta.snapshot(id)
	if sm == nil {
		return nil, nil, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	}
	d.mu.Lock()
	open := d.mu.views[id]
	d.mu.Unlock()
	if open > 0 {
		return nil, nil, fmt.Errorf("snapshot %s: %w: %d open views", id, ErrBusy, open)
	}
	pi := d.meta.layerIndex(sm.Layer)
	child, parent := d.chain[pi+1], d.chain[pi]
	m := d.meta.clone()
	m.Snapshots = append(m.Snapshots[:i], m.Snapshots[i+1:]...)
	m.Merge = &mergeMeta{Snapshot: id, Child: child.id, Parent: parent.id, Total: int64(child.held())}
	return m, parent, nil
}

// applyDelete switches to m, which commitDelete made durable, and starts
// the merge: exclusive barrier, no I/O. If a checkpoint ran in between
// (it committed the old snapshot list again), or a view of the snapshot
// was opened, it takes the checkpoint of the slow way now.
func (d *Disk) applyDelete(id string, m *diskMeta) (*Task, error) {
	d.lockExclusive()
	defer d.barrier.Unlock()
	if d.closed { // disk.meta records the merge: it resumes at Open
		return nil, ErrClosed
	}
	d.mu.Lock()
	open := d.mu.views[id]
	d.mu.Unlock()
	if open > 0 || d.meta.Gen != m.Gen {
		return d.deleteLocked(id)
	}
	d.dropTree(id, d.changeIDOf(id))
	d.meta = m
	return d.startDelete(m), nil
}

// deleteCheckpointed deletes snapshot id with a checkpoint under the
// exclusive barrier: the slow way, for a shared parent or a full disk.
func (d *Disk) deleteCheckpointed(id string) (*Task, error) {
	d.lockExclusive()
	defer d.barrier.Unlock()
	return d.deleteLocked(id)
}

func (d *Disk) deleteLocked(id string) (*Task, error) {
	changeID := d.changeIDOf(id)
	m, parent, err := d.deleteMeta(id)
	if err != nil {
		// Back to what memory says (the snapshot is there) if disk.meta
		// was committed without it.
		if cerr := d.checkpoint(d.meta.clone(), d.chain, false); cerr != nil && !d.closed {
			return nil, cerr
		}
		return nil, err
	}
	if err := d.unshare(parent); err != nil {
		return nil, noSpace(err)
	}
	if err := d.checkpoint(m, d.chain, false); err != nil {
		return nil, err
	}
	d.dropTree(id, changeID)
	return d.startDelete(d.meta), nil
}

// startDelete sets up the merge m records and starts it. Exclusive
// barrier held.
func (d *Disk) startDelete(m *diskMeta) *Task {
	ci := m.layerIndex(m.Merge.Child)
	child, parent := d.chain[ci], d.chain[ci-1]
	d.merge = &mergeState{child: child, parent: parent, live: ci == len(d.chain)-1, total: m.Merge.Total}
	return d.startMerge()
}

// startMerge runs the consolidation in the background. Exclusive barrier
// held, or called before the disk is shared.
func (d *Disk) startMerge() *Task {
	t := &Task{Snapshot: d.meta.Merge.Snapshot, total: d.merge.total, done: make(chan struct{})}
	d.mu.Lock()
	d.mu.task = t
	d.mu.Unlock()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		t.err = d.runMerge(d.ctx, t)
		close(t.done)
	}()
	return t
}

// Consolidation returns the running or last consolidation task, or nil.
func (d *Disk) Consolidation() *Task {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.task
}

func (d *Disk) runMerge(ctx context.Context, t *Task) error {
	wait := noSpaceBackoff
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consolidation paused, resumes at next open: %w", err)
		}
		n, err := d.mergeStep()
		// Sync as we go, so the final switch has little dirty data left.
		if after := t.merged.Add(n); after/syncEvery != (after-n)/syncEvery {
			d.presync()
		}
		if err == nil && n == 0 {
			d.presync()
			if err = d.finishMerge(); !errors.Is(err, ErrNoSpace) {
				return err
			}
		}
		switch err = noSpace(err); {
		case errors.Is(err, ErrNoSpace):
			// A step that found no room changed nothing (a grain is
			// marked in the parent only once its copy is written, and a
			// failed checkpoint leaves the old generation): try again
			// once space may have been freed.
			sleepCtx(ctx, wait)
			wait = min(2*wait, maxNoSpaceBackoff)
		case err != nil:
			return d.fail(fmt.Errorf("consolidation: %w", err))
		default:
			wait = noSpaceBackoff
		}
	}
}

// mergeStep merges the next run of grains the child holds, under their
// grain locks, and returns how many it merged (0: nothing left).
func (d *Disk) mergeStep() (int64, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	ms := d.merge
	next := func() (uint64, uint64, bool) {
		ms.child.mu.RLock()
		defer ms.child.mu.RUnlock()
		g := ms.child.nextSetLocked(0)
		if g < 0 {
			return 0, 0, false
		}
		return uint64(g), uint64(g) + maxMergeRun, true
	}
	g0, g1, ok := next()
	if !ok {
		return 0, nil
	}
	g1 = min(g1, uint64((d.size+d.grain-1)/d.grain))
	unlock := d.lockGrains(g0, g1)
	defer unlock()
	var n int64
	for _, r := range resolve([]*layer{ms.parent, ms.child}, g0, g1) {
		if r.src != 1 {
			continue
		}
		if err := d.mergeRun(ms, r); err != nil {
			return n, err
		}
		n += int64(r.g1 - r.g0)
	}
	if n == 0 { // grains beyond the disk's end: drop them
		ms.child.set(g0, g1, absent)
		n = int64(g1 - g0)
	}
	return n, nil
}

// mergeRun copies one run of the child into the parent and drops it from
// the child. The child's file keeps the data: until the next flush records
// the drop, a crash leaves the child's (identical) copy in force.
//
// The parent is marked written before its map changes (a flush that takes
// the change syncs the data), and the change of both maps is one step for
// flushes (cutMu): a flush that recorded the child's drop but not the
// parent's gain would, after a power loss, uncover what lies below the
// parent.
func (d *Disk) mergeRun(ms *mergeState, r run) error {
	a := int64(r.g0) * d.grain
	b := min(int64(r.g1)*d.grain, d.size)
	st := present
	if r.st == zeroed {
		st = zeroed
		punch := vfs.PunchHole
		if ms.parent.flat && d.thick() {
			punch = func(f vfs.File, off, n int64) error { return zeroKeep(f, off, n, false) }
		}
		if err := punch(ms.parent.f, a, b-a); err != nil {
			return err
		}
	} else {
		buf := make([]byte, b-a)
		if err := fsutil.ReadFull(ms.child.f, buf, a); err != nil {
			return err
		}
		if _, err := ms.parent.f.WriteAt(buf, a); err != nil {
			return err
		}
	}
	ms.parent.written.Store(true)
	d.cutMu.Lock()
	defer d.cutMu.Unlock()
	ms.parent.set(r.g0, r.g1, st)
	ms.child.set(r.g0, r.g1, absent)
	return nil
}

// finishMerge drops the emptied child from the chain with no fsync under
// the exclusive barrier: the checkpoint it used to take there (tens of
// milliseconds here, seconds when it queued behind a flush of the merged
// data) was the guest's longest stall. Invariant 6 (docs/format.md):
//
//  1. shared barrier: a flat parent spans the disk; a flush makes the
//     child's drops, the parent's gains and their data durable. The
//     durable state is "merge in progress, child empty": a crash from
//     here resumes a merge with nothing to copy;
//  2. exclusive barrier, no sync: a drop record (0x02) is appended to the
//     journal, and the chain and disk.meta in memory lose the child.
//     Records after it name the parent only, which the durable chain
//     reads the same way whether or not the drop survives;
//  3. shared barrier: the journal sync makes the drop durable (replay
//     drops the child, the merge is over); the task ends after it. The
//     child's file, which nothing names any more, is emptied to give its
//     space back; the next checkpoint commits the chain and removes it;
//  4. if snapshots moved from the child to the parent, that checkpoint is
//     now: direct readers (direct.go) read disk.meta, not the journal, and
//     refuse a snapshot under a merge until disk.meta says it ended. When
//     the child was the live top (deleting the newest snapshot, as a
//     backup does), no snapshot was on it and there is no pause at all.
func (d *Disk) finishMerge() error {
	ms := d.merge
	var log *journal.Log
	var moved bool
	for {
		size, err := d.flushMerged(ms)
		if err != nil {
			return err
		}
		d.mergeStepHook(1)
		log, moved, err = d.dropChild(ms, size)
		if err == nil {
			break
		}
		if !errors.Is(err, errGrown) {
			return err
		}
	}
	defer ms.child.f.Close()
	d.mergeStepHook(2)
	if err := d.syncDrop(log); err != nil {
		return err
	}
	d.mergeStepHook(3)
	if vfs.Links(ms.child.f) < 2 { // a linked clone's layer keeps its data
		ms.child.f.Truncate(0) // best effort: gc removes it at the next commit
	}
	if !moved {
		return nil
	}
	// The end is durable already: a full file system only defers this.
	if err := d.Checkpoint(); err != nil && !errors.Is(err, ErrNoSpace) {
		return err
	}
	return nil
}

func (d *Disk) mergeStepHook(i int) {
	if d.afterMergeStep != nil {
		d.afterMergeStep(i)
	}
}

// errGrown: the disk grew between finishMerge's steps 1 and 2, so the
// flat parent no longer spans it; step 1 runs again.
var errGrown = errors.New("disk grew during the end of a consolidation")

// flushMerged is step 1 of finishMerge; it returns the size the flat
// parent now spans.
func (d *Disk) flushMerged(ms *mergeState) (int64, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	if ms.parent.flat {
		// The flat layer must span the disk so qemu-img sees its size;
		// marked written so the flush's data sync makes the size durable.
		ms.parent.written.Store(true)
		if err := ms.parent.f.Truncate(d.size); err != nil {
			return 0, d.fail(err)
		}
	}
	return d.size, d.flushLocked()
}

// dropChild is step 2 of finishMerge; it returns the journal holding the
// drop record and whether snapshots moved to the parent. The child cannot have changed since the flush (nothing
// writes to an empty child); if it had, it flushes again, here.
func (d *Disk) dropChild(ms *mergeState, size int64) (*journal.Log, bool, error) {
	d.lockExclusive()
	defer d.barrier.Unlock()
	if d.closed {
		return nil, false, ErrClosed
	}
	if d.size != size {
		return nil, false, errGrown
	}
	if ms.child.held() != 0 {
		return nil, false, errors.New("consolidation: child not empty at finish")
	}
	if ms.child.changedSinceRecord() {
		if err := d.flushLocked(); err != nil {
			return nil, false, err
		}
	}
	rec := journal.Record{Type: recDrop, Payload: dropPayload(ms.child.id, ms.parent.id)}
	if err := d.log.Append(rec); err != nil {
		if err = noSpace(err); !errors.Is(err, ErrNoSpace) {
			return nil, false, d.fail(err)
		}
		return nil, false, err // all or nothing: retried once space is freed
	}
	moved := d.dropLayer(ms.child, ms.parent)
	return d.log, moved, nil
}

// dropLayer removes the merged child from the chain and disk.meta in
// memory; snapshots on it move to the parent (it reports whether any
// did). Exclusive barrier held (or replay).
func (d *Disk) dropLayer(child, parent *layer) bool {
	m := d.meta.clone()
	ci := m.layerIndex(child.id)
	d.dropped = append(d.dropped, m.Layers[ci].Data, m.Layers[ci].Map)
	m.Layers = append(m.Layers[:ci], m.Layers[ci+1:]...)
	moved := false
	for i := range m.Snapshots {
		if m.Snapshots[i].Layer == child.id {
			m.Snapshots[i].Layer = parent.id
			moved = true
		}
	}
	m.Merge = nil
	d.meta = m
	d.chain = append(append([]*layer(nil), d.chain[:ci]...), d.chain[ci+1:]...)
	d.merge = nil
	return moved
}

// syncDrop is step 3 of finishMerge: the journal sync, under the shared
// barrier so that log is still the disk's journal (a checkpoint since
// then committed a disk.meta without the child: nothing left to sync).
func (d *Disk) syncDrop(log *journal.Log) error {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed || d.log != log {
		return nil
	}
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	if err := log.Sync(); err != nil {
		return d.fail(err)
	}
	return nil
}

// dropPayload is a 0x02 record's payload: the child's and the parent's
// layer IDs (docs/format.md, "Journal").
func dropPayload(child, parent uint64) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, child), parent)
}

// replayDrop applies a 0x02 record: the merge it names ended.
func (d *Disk) replayDrop(payload []byte, byID map[uint64]*layer) error {
	if len(payload) != 16 {
		return fmt.Errorf("%w: drop record of %d bytes", ErrCorrupt, len(payload))
	}
	cid, pid := binary.LittleEndian.Uint64(payload), binary.LittleEndian.Uint64(payload[8:])
	mm := d.meta.Merge
	child, parent := byID[cid], byID[pid]
	if mm == nil || mm.Child != cid || mm.Parent != pid || child == nil || parent == nil || child.held() != 0 {
		return fmt.Errorf("%w: drop record of layer %d does not end the merge in progress", ErrCorrupt, cid)
	}
	d.dropLayer(child, parent)
	delete(byID, cid)
	child.f.Close()
	return nil
}

// unshare gives the disk its own copy of layer l's file when a linked
// clone (or the disk it was cloned from) shares it (more than one link),
// before a consolidation writes into it: the copy (reflinked where the
// file system can) replaces the disk's name of the file, and the other
// disk keeps the original. Both hold the same bytes until then, since a
// shared layer is frozen, so the rename needs no checkpoint. Exclusive
// barrier held.
//
// Invariant 10 (docs/format.md).
func (d *Disk) unshare(l *layer) error {
	if vfs.Links(l.f) < 2 {
		return nil
	}
	name := filepath.Join(d.dir, d.meta.Layers[d.meta.layerIndex(l.id)].Data)
	tmp := filepath.Join(d.dir, "."+filepath.Base(name)+".unshare")
	f, err := d.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = d.copyFile(f, l.f)
	if err == nil {
		err = vfs.Datasync(f)
	}
	if err == nil {
		err = d.fs.Rename(tmp, name)
	}
	if err == nil {
		err = vfs.SyncDir(d.fs, d.dir)
	}
	if err != nil {
		f.Close()
		d.fs.Remove(tmp)
		return fmt.Errorf("unshare layer %d: %w", l.id, err)
	}
	f.Close()
	// Reopened by its name: the layer's file is named by disk.meta (and
	// a later unshare or clone finds it there), not by the temporary name.
	nf, err := d.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return d.fail(fmt.Errorf("unshare layer %d: reopen: %w", l.id, err))
	}
	l.f.Close()
	l.f = nf
	return nil
}

// copyFile copies src's data extents (and size) into the empty dst.
func (d *Disk) copyFile(dst, src vfs.File) error {
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if err := dst.Truncate(fi.Size()); err != nil {
		return err
	}
	ext, err := vfs.Extents(src, 0, fi.Size())
	if err != nil {
		return err
	}
	var st CopyStats
	for _, e := range ext {
		if e.Data {
			if err := moveBytes(dst, src, e.Off, e.Off, e.Len, &st); err != nil {
				return err
			}
		}
	}
	return nil
}

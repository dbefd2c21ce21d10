package disk

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// A snapshot is a checkpoint (invariant 4) whose durable work is done
// while guest I/O goes on (invariant 5, docs/format.md):
//
//  1. prepare, shared barrier: the new top layer's file, generation
//     GEN+1's empty journal (its CBT session started; not synced yet)
//     and placeholders
//     for its map, CBT checkpoint and disk.meta files, as large as their
//     content would be now plus a margin. A full file system fails here,
//     before anything changed (invariant 8);
//  2. freeze, exclusive barrier, no I/O and no sync: encode the files of
//     GEN+1 (the snapshot's maps, the closed CBT epoch), then switch the
//     chain, disk.meta and the journal in memory. Later writes go to the
//     new delta, their CBT records to GEN+1's journal. If a content no
//     longer fits its placeholder (or a checkpoint ran since step 1), the
//     snapshot is taken the slow way instead (createLocked);
//  3. commit, no barrier: sync the frozen layers' data and the new
//     journal, write the files over their placeholders (each synced) and
//     sync the directory (the placeholders' names), all in parallel;
//     rename disk.meta, sync the directory. Flushes and checkpoints wait
//     for it (waitCommit): a flush acknowledged before the rename would
//     be in a journal that a power cut makes void.
//
// A power cut before the rename leaves generation GEN in force, which
// knows nothing of the new delta: the writes after the freeze were never
// flushed, and they touched only the new delta, so GEN's data and CBT
// are what they were (TestCrashSnapshotSteps).

// snapMargin is the room a placeholder keeps for its file to grow
// between the prepare and the freeze: a quarter plus this many bytes.
const snapMargin = 4096

// snapPrep is what a snapshot prepared while I/O went on.
type snapPrep struct {
	gen  uint64         // the generation it commits
	nl   *layer         // the new top layer
	log  *journal.Log   // generation gen's journal
	room map[string]int // placeholder path → bytes it holds
	made []string       // every path it created
}

// snapCommit is what a frozen snapshot still has to make durable.
type snapCommit struct {
	files  map[string][]byte // path → content, over its placeholder
	meta   string            // the temporary disk.meta among them
	frozen []*layer          // the chain below the new top
	old    *journal.Log      // generation GEN's journal
	log    *journal.Log
	done   chan struct{} // closed once committed (or failed)
}

// snapStepHook calls afterSnapStep (tests).
func (d *Disk) snapStepHook(step int) {
	if d.afterSnapStep != nil {
		d.afterSnapStep(step)
	}
}

// waitCommit waits for a snapshot's commit in progress. Called with the
// barrier held (either way): the commit takes none.
func (d *Disk) waitCommit() {
	if c := d.commitDone; c != nil {
		<-c
	}
}

// prepareSnapshot is step 1. The caller holds deleteMu.
func (d *Disk) prepareSnapshot(extra int) (*snapPrep, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.merge != nil {
		return nil, fmt.Errorf("%w: a consolidation is in progress", ErrBusy)
	}
	p := &snapPrep{gen: d.meta.Gen + 1, room: map[string]int{}}
	if err := d.prepareFiles(p, extra); err != nil {
		p.discard(d, true)
		return nil, noSpace(err)
	}
	return p, nil
}

func (d *Disk) prepareFiles(p *snapPrep, extra int) error {
	nl, err := d.newDelta(d.meta.NextID)
	if err != nil {
		return err
	}
	p.nl, p.made = nl, append(p.made, nl.f.Name())
	jp := filepath.Join(d.dir, journalName(p.gen))
	p.made = append(p.made, jp)
	if p.log, err = journal.CreateUnsynced(d.fs, jp, p.gen); err != nil { // synced by the commit
		return err
	}
	if err := d.startSession(p.log); err != nil {
		return err
	}
	sizes := map[string]int{}
	chain := append(append([]*layer(nil), d.chain...), nl)
	for i, l := range chain {
		if !l.flat && (i == len(chain)-1 || l.dirtyMap() || d.meta.Layers[i].Map == "") {
			sizes[mapName(l.id, p.gen)] = l.mapSizeHint()
		}
	}
	if d.tracker != nil {
		sizes[cbtName(p.gen)] = d.tracker.SizeHint()
	}
	sizes["."+metaName+".tmp"] = len(d.meta.encode()) + extra
	for name, n := range sizes {
		p.made = append(p.made, filepath.Join(d.dir, name))
		if err := d.placeholder(p, filepath.Join(d.dir, name), n+n/4+snapMargin); err != nil {
			return err
		}
	}
	return nil
}

// mapSizeHint bounds the length of encodeMap's result now. Like
// Tracker.SizeHint, it only reads the bitmaps: encodeMap optimizes them
// in place, which only the exclusive barrier allows.
func (l *layer) mapSizeHint() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return 128 + int(l.mu.present.GetSerializedSizeInBytes()+l.mu.zero.GetSerializedSizeInBytes())
}

// placeholder writes n zero bytes at path (no sync: what matters is that
// the file system gave them room; the commit writes over them).
func (d *Disk) placeholder(p *snapPrep, path string, n int) error {
	f, err := d.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(make([]byte, n), 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	p.room[path] = n
	return err
}

// discard removes what p made. mine: no checkpoint ran since p was made;
// otherwise the generation's names may be that checkpoint's files, and
// only the new layer's (no checkpoint names it) is removed.
func (p *snapPrep) discard(d *Disk, mine bool) {
	if p.log != nil {
		p.log.Close()
	}
	if p.nl != nil {
		p.nl.f.Close()
	}
	for i, path := range p.made {
		if mine || i == 0 {
			d.fs.Remove(path)
		}
	}
}

// freezeSnapshot is step 2. It returns no snapCommit when it took the
// snapshot the slow way or refused it.
func (d *Disk) freezeSnapshot(id, description string, p *snapPrep) (SnapshotInfo, *snapCommit, error) {
	d.lockExclusive()
	defer d.barrier.Unlock()
	if d.closed || d.meta.Gen+1 != p.gen || d.meta.NextID != p.nl.id || d.failed() != nil {
		p.discard(d, d.meta.Gen+1 == p.gen)
		info, err := d.createLocked(id, description)
		return info, nil, err
	}
	m, s, err := d.snapshotMeta(id, description)
	if err != nil {
		p.discard(d, true)
		return SnapshotInfo{}, nil, err
	}
	m.Gen = p.gen
	chain := append(append([]*layer(nil), d.chain...), p.nl)
	c, ok := d.snapFiles(m, chain, p)
	if !ok {
		p.discard(d, true)
		info, err := d.createLocked(id, description)
		return info, nil, err
	}
	for _, l := range chain {
		l.clearChanges() // in the new maps; later changes go to the new journal
	}
	if d.tracker != nil {
		d.tracker.Committed(true) // later intents go to the new journal
	}
	c.old = d.log
	d.log, d.meta, d.chain, d.dropped = p.log, m, chain, nil
	d.commitDone = c.done
	return d.snapInfo(s), c, nil
}

// snapFiles encodes generation m.Gen's files, as writeGeneration does,
// and reports whether each fits its placeholder. Exclusive barrier held.
func (d *Disk) snapFiles(m *diskMeta, chain []*layer, p *snapPrep) (*snapCommit, bool) {
	c := &snapCommit{files: map[string][]byte{}, frozen: chain[:len(chain)-1], log: p.log, done: make(chan struct{})}
	for i, l := range chain {
		if l.flat || (!l.dirtyMap() && m.Layers[i].Map != "") {
			continue
		}
		m.Layers[i].Map = mapName(l.id, m.Gen)
		c.files[filepath.Join(d.dir, m.Layers[i].Map)] = l.encodeMap(d.grain)
	}
	if d.tracker != nil {
		m.CBT = &cbtMeta{Checkpoint: cbtName(m.Gen)}
		c.files[filepath.Join(d.dir, m.CBT.Checkpoint)] = d.tracker.Encode(true)
	}
	c.meta = filepath.Join(d.dir, "."+metaName+".tmp")
	c.files[c.meta] = m.encode() // after the names above
	for path, data := range c.files {
		if n, ok := p.room[path]; !ok || len(data) > n {
			return nil, false
		}
	}
	return c, true
}

// commitSnapshot is step 3. A failure fails the disk: the memory is
// ahead of what is durable (the files had room, so it is not ENOSPC).
func (d *Disk) commitSnapshot(c *snapCommit) error {
	defer close(c.done)
	var g errgroup.Group
	g.Go(func() error { return d.syncData(c.frozen) })
	g.Go(c.log.Sync) // its header, unsynced since step 1
	for path, data := range c.files {
		g.Go(func() error { return overwrite(d.fs, path, data) })
	}
	// The names the prepare created: overwrite creates none, so this sync
	// need not follow the others (one fsync wait less before the rename).
	g.Go(func() error { return vfs.SyncDir(d.fs, d.dir) })
	err := g.Wait()
	d.snapStepHook(2)
	if err == nil {
		err = d.fs.Rename(c.meta, filepath.Join(d.dir, metaName))
	}
	if err == nil {
		d.snapStepHook(3)
		err = vfs.SyncDir(d.fs, d.dir) // the commit
	}
	if err != nil {
		return d.fail(fmt.Errorf("snapshot commit: %w", err))
	}
	c.old.Close()
	d.gc()
	c.log.Reserve(d.reserve)
	return nil
}

// overwrite replaces the content of the existing file at path with data,
// in the room it already has, and syncs it.
func overwrite(fsys vfs.FS, path string, data []byte) error {
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return err
	}
	return vfs.Datasync(f)
}

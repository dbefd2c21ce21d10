package disk

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/vfs"
)

// treeDirName is the disk's subdirectory of snapshot tree files (T1): a
// directory of its own, so the checkpoint's gc never sees (and removes)
// a tree file's temporary file.
const treeDirName = "trees"

func (d *Disk) treePath(id string) string {
	return filepath.Join(d.dir, treeDirName, id+".tree")
}

// treeBase returns the tree snapshot id starts from and the change ID
// CBT is asked from: the newer of the newest older snapshot with a tree
// (T2) and the kept tree of a deleted one (T6), or a new all-zero tree
// and cbt.Any (T3). The base is cloned, never changed.
func (d *Disk) treeBase(id string) (*Snapshot, *hashtree.Tree, string, error) {
	d.barrier.RLock()
	defer d.barrier.RUnlock()
	i, sm := d.meta.snapshot(id)
	if sm == nil || d.closed {
		return nil, nil, "", errSnapshotGone
	}
	view := &Snapshot{d: d, info: d.snapInfo(*sm)} // not counted: a delete is not refused for it
	base, since := d.olderTree(id, i)
	if base == nil {
		t, err := hashtree.New(sm.Size, d.trees.gran)
		return view, t, cbt.Any, err
	}
	t := base.Clone()
	if err := t.Resize(sm.Size); err != nil {
		return nil, nil, "", err
	}
	return view, t, since, nil
}

// olderTree is the base of snapshot id's tree (at index i of d.meta)
// and its change ID, nil if none (T2, T6). Shared barrier held.
func (d *Disk) olderTree(id string, i int) (*hashtree.Tree, string) {
	d.trees.mu.Lock()
	kept, own := d.trees.kept, d.trees.m[id]
	d.trees.mu.Unlock()
	if own == nil || (kept != nil && kept.seq >= own.seq) {
		kept = nil // not older than id: CBT cannot answer from it
	}
	for j := i - 1; j >= 0; j-- {
		older := d.meta.Snapshots[j]
		e := d.trees.entry(older.ID)
		if e == nil || !e.ready() {
			continue
		}
		if kept != nil && kept.seq > e.seq {
			break // the deleted snapshot is newer
		}
		if base, err := d.loadedTree(older.ID, e); err == nil {
			return base, d.snapInfo(older).ChangeID
		} // else an older one, else T3
	}
	if kept != nil {
		return kept.tree, kept.changeID
	}
	return nil, ""
}

// ready reports a published tree without waiting.
func (e *treeEntry) ready() bool {
	select {
	case <-e.done:
		return e.err == nil
	default:
		return false
	}
}

// buildTree computes snapshot id's tree (T2, T3). Clone only touches
// the base's shared flags, which readers (Leaf) never look at.
func (d *Disk) buildTree(ctx context.Context, id string) (*hashtree.Tree, error) {
	view, t, since, err := d.treeBase(id)
	if err != nil {
		return nil, err
	}
	err = d.rehashChanged(ctx, view, t, since)
	if (errors.Is(err, ErrChangeIDInvalid) || errors.Is(err, ErrCBTDisabled)) && since != cbt.Any {
		// CBT no longer answers since the base (reset, expired): T3.
		if t, err = hashtree.New(view.info.Size, d.trees.gran); err != nil {
			return nil, err
		}
		err = d.rehashChanged(ctx, view, t, cbt.Any)
	}
	if err != nil {
		return nil, err
	}
	t.Root() // publish with its nodes up to date: readers never update them
	return t, nil
}

// rehashChanged sets the leaf of every block in the areas the view's
// ChangedAreas reports since changeID, a page of areas at a time.
func (d *Disk) rehashChanged(ctx context.Context, view *Snapshot, t *hashtree.Tree, since string) error {
	bs := int64(t.BlockSize())
	last := int64(-1) // the last block hashed: areas may share a block
	for off := int64(0); off < view.info.Size; {
		ca, err := view.ChangedAreas(off, since)
		if err != nil {
			return err
		}
		var blocks []int64
		for _, a := range ca.ChangedArea {
			for b := max(a.Start/bs, last+1); b < (a.Start+a.Length+bs-1)/bs; b++ {
				blocks, last = append(blocks, b), b
			}
		}
		d.trees.hashed.Add(int64(len(blocks)))
		if err := d.hashBlocks(ctx, view, t, blocks); err != nil {
			return err
		}
		if ca.Length <= 0 {
			return fmt.Errorf("%w: changed areas made no progress at %d", ErrCorrupt, off)
		}
		off = ca.StartOffset + ca.Length
	}
	return nil
}

// saveTree persists id's tree (T1): temp file, fsync, rename, dir fsync.
func (d *Disk) saveTree(id string, t *hashtree.Tree) error {
	b, _ := t.MarshalBinary()
	return noSpace(vfs.WriteAtomic(d.fs, d.treePath(id), b))
}

// removeTree removes id's tree file (T5); a leftover after a crash is
// removed at the next open.
func (d *Disk) removeTree(id string) { d.fs.Remove(d.treePath(id)) }

// dropTree drops the tree and file of snapshot id, whose change ID was
// changeID (T5), keeping the tree as the next one's base (T6). Caller
// holds the exclusive barrier.
func (d *Disk) dropTree(id, changeID string) {
	d.trees.drop(id, changeID)
	d.removeTree(id) // T5
}

// changeIDOf is snapshot id's change ID as d.meta lists it ("" if none),
// read before a delete takes it out.
func (d *Disk) changeIDOf(id string) string {
	if _, sm := d.meta.snapshot(id); sm != nil {
		return d.snapInfo(*sm).ChangeID
	}
	return ""
}

// loadTrees publishes the tree file of every snapshot that has a valid
// one and queues the others (T4), oldest first; it removes files of
// snapshots that are gone and temporary leftovers (T5). Called by Open
// before the disk is shared.
func (d *Disk) loadTrees() error {
	if d.trees.off {
		return nil
	}
	dir := filepath.Join(d.dir, treeDirName)
	if err := vfs.MkdirAllSync(d.fs, dir, 0o700); err != nil {
		return noSpace(err)
	}
	keep := map[string]bool{}
	for _, sm := range d.meta.Snapshots {
		keep[sm.ID+".tree"] = true
		if t := d.readTree(sm); t != nil {
			d.trees.publishLoaded(sm.ID, t)
		} else {
			d.trees.enqueue(sm.ID)
		}
	}
	ents, err := d.fs.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !keep[e.Name()] && (strings.HasSuffix(e.Name(), ".tree") || strings.HasPrefix(e.Name(), ".")) {
			d.fs.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// readTree is sm's tree from its file, nil if missing, corrupt or not of
// the snapshot's size and block size (T4: then it is recomputed).
func (d *Disk) readTree(sm snapMeta) *hashtree.Tree {
	b, err := vfs.ReadFile(d.fs, d.treePath(sm.ID))
	if err != nil {
		return nil
	}
	t, err := hashtree.Decode(b)
	if err != nil || t.Size() != sm.Size || t.BlockSize() != d.trees.gran {
		return nil
	}
	return t
}

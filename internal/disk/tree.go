package disk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/vfs"
)

// The hash tree of every snapshot (docs/format.md, "Hash tree" H1–H5 and
// "Snapshot trees on the host" T1–T6). A snapshot's tree is computed in the
// background after the snapshot is taken, never by CreateSnapshot: from
// the tree of the newest older snapshot that has one, rehashing only the
// blocks CBT marked between the two (T2), or, without one, from the
// snapshot's allocated areas (T3). Readers wait on the entry's done.

// treeEntry is one snapshot's tree: pending until done is closed, then
// root, size and bs (or err) are set and never change. Only the newest
// published tree stays in memory (tree, under trees.mu), the base of the
// next; the others are read from their files when asked for, so a disk
// with many snapshots holds one tree, not one per snapshot.
type treeEntry struct {
	done chan struct{}
	seq  uint64         // order of the snapshots' entries: an older snapshot's is lower
	tree *hashtree.Tree // nil when evicted; read-only: Leaf only
	root hashtree.Hash
	size int64
	bs   int
	err  error
}

// trees is a disk's snapshot trees and the queue of those to compute.
type trees struct {
	off  bool // the disk keeps no trees (no CBT, or the datastore's option)
	gran int  // leaf unit: the CBT granularity
	wake chan struct{}
	// hashed counts the blocks read and hashed for trees (tests, metrics).
	hashed atomic.Int64
	// read counts the bytes read from layer files for trees: only what
	// the layers hold, never a hole or a zeroed grain (tests, metrics).
	read atomic.Int64

	mu    sync.Mutex
	m     map[string]*treeEntry // by snapshot ID
	queue []string              // snapshot IDs to compute, oldest first
	seq   uint64                // the last entry's seq
	// kept is the tree of the newest deleted snapshot while it is the
	// newest tree the disk has (T6): the base of the next snapshot's.
	kept *keptTree
}

// keptTree is a deleted snapshot's tree kept as a base (T6).
type keptTree struct {
	tree     *hashtree.Tree // read-only
	changeID string         // the deleted snapshot's
	seq      uint64         // its entry's
}

// treeWorkers bounds the goroutines hashing one snapshot's blocks.
const treeWorkers = 2

func newTrees(off bool, gran int) *trees {
	return &trees{off: off, gran: gran, wake: make(chan struct{}, 1), m: map[string]*treeEntry{}}
}

// enqueue registers a pending tree for id and wakes the worker.
func (ts *trees) enqueue(id string) {
	if ts.off {
		return
	}
	ts.mu.Lock()
	ts.seq++
	ts.m[id] = &treeEntry{done: make(chan struct{}), seq: ts.seq}
	ts.queue = append(ts.queue, id)
	ts.mu.Unlock()
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// publishLoaded makes a tree read from its file id's.
func (ts *trees) publishLoaded(id string, t *hashtree.Tree) {
	ts.mu.Lock()
	ts.seq++
	e := &treeEntry{done: make(chan struct{}), seq: ts.seq}
	ts.m[id] = e
	ts.publishLocked(e, t)
	ts.mu.Unlock()
}

// publishLocked completes e with t, which becomes the one tree kept in
// memory. trees.mu held.
func (ts *trees) publishLocked(e *treeEntry, t *hashtree.Tree) {
	for _, o := range ts.m {
		o.tree = nil
	}
	ts.kept = nil // e is newer (the queue is computed oldest first)
	e.tree, e.root, e.size, e.bs = t, t.Root(), t.Size(), t.BlockSize()
	close(e.done)
}

// loadedTree is e's tree (snapshot id's, published): the one in memory,
// or read from its file and checked against the published root.
func (d *Disk) loadedTree(id string, e *treeEntry) (*hashtree.Tree, error) {
	d.trees.mu.Lock()
	t := e.tree
	d.trees.mu.Unlock()
	if t != nil {
		return t, nil
	}
	b, err := vfs.ReadFile(d.fs, d.treePath(id))
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: hash tree: %w", id, err)
	}
	if t, err = hashtree.Decode(b); err != nil {
		return nil, fmt.Errorf("snapshot %s: hash tree: %w: %v", id, ErrCorrupt, err)
	}
	if t.Root() != e.root || t.Size() != e.size || t.BlockSize() != e.bs {
		return nil, fmt.Errorf("snapshot %s: %w: its hash tree file no longer has its root", id, ErrCorrupt)
	}
	return t, nil
}

// entry returns id's entry, nil if it has none.
func (ts *trees) entry(id string) *treeEntry {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.m[id]
}

// drop forgets id's tree (its snapshot, whose change ID was changeID,
// was deleted); a computation in flight finds its entry gone and throws
// its result away. A published tree still in memory is kept as the base
// of the next snapshot's (T6).
func (ts *trees) drop(id, changeID string) {
	ts.mu.Lock()
	e := ts.m[id]
	delete(ts.m, id)
	if e != nil && e.tree != nil && changeID != "" {
		ts.kept = &keptTree{tree: e.tree, changeID: changeID, seq: e.seq}
	}
	ts.mu.Unlock()
	if e != nil {
		select {
		case <-e.done:
		default:
			e.err = fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
			close(e.done)
		}
	}
}

// next pops the oldest queued snapshot ID still pending and its entry
// ("", nil when none).
func (ts *trees) next() (string, *treeEntry) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for len(ts.queue) > 0 {
		id := ts.queue[0]
		ts.queue = ts.queue[1:]
		if e := ts.m[id]; e != nil {
			return id, e
		}
	}
	return "", nil
}

// info fills a SnapshotInfo's root once its tree is ready.
func (ts *trees) info(si *SnapshotInfo) {
	e := ts.entry(si.ID)
	if e == nil {
		return
	}
	select {
	case <-e.done:
		if e.err == nil {
			si.Root, si.TreeBlockSize = e.root, e.bs
		}
	default:
	}
}

// SnapshotTree returns snapshot id's hash tree and root, waiting while it
// is computed until ctx ends (then ErrTreePending). The tree is shared
// and read-only: use Leaf only. A disk without trees answers ErrNoTree.
func (d *Disk) SnapshotTree(ctx context.Context, id string) (*hashtree.Tree, hashtree.Hash, error) {
	d.barrier.RLock()
	_, sm := d.meta.snapshot(id)
	closed := d.closed
	d.barrier.RUnlock()
	switch {
	case closed:
		return nil, hashtree.Hash{}, ErrClosed
	case sm == nil:
		return nil, hashtree.Hash{}, fmt.Errorf("snapshot %s: %w", id, ErrNotFound)
	case d.trees.off:
		return nil, hashtree.Hash{}, fmt.Errorf("snapshot %s: %w", id, ErrNoTree)
	}
	e := d.trees.entry(id)
	if e == nil {
		return nil, hashtree.Hash{}, fmt.Errorf("snapshot %s: %w", id, ErrNoTree)
	}
	if err := d.waitTree(ctx, id, e); err != nil {
		return nil, hashtree.Hash{}, err
	}
	if e.err != nil {
		return nil, hashtree.Hash{}, e.err
	}
	t, err := d.loadedTree(id, e)
	return t, e.root, err
}

// waitTree waits for e until ctx ends (ErrTreePending) or the disk
// closes. A ready tree wins over an expired ctx: wait=0 asks without
// waiting, and select would pick between the two at random.
func (d *Disk) waitTree(ctx context.Context, id string, e *treeEntry) error {
	select {
	case <-e.done:
		return nil
	default:
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("snapshot %s: %w", id, ErrTreePending)
	case <-d.ctx.Done():
		return ErrClosed
	}
}

// startTrees runs the tree worker until the disk closes (d.ctx): it
// computes queued trees one at a time, oldest first, so a snapshot's
// base (an older snapshot) is done before it.
func (d *Disk) startTrees() {
	if d.trees.off {
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		for {
			for id, e := d.trees.next(); e != nil; id, e = d.trees.next() {
				if err := d.computeTree(d.ctx, id, e); err != nil && d.ctx.Err() != nil {
					return // closing: the tree is recomputed at the next open (T4)
				}
			}
			select {
			case <-d.trees.wake:
			case <-d.ctx.Done():
				return
			}
		}
	}()
}

// computeTree computes, persists and publishes snapshot id's tree.
// e is id's entry when queued: a snapshot deleted and taken again under
// the same ID meanwhile has another entry, which this result is not for.
func (d *Disk) computeTree(ctx context.Context, id string, e *treeEntry) error {
	t, err := d.buildTree(ctx, id)
	// Saved under the lock, so a delete (drop, then removeTree) cannot
	// interleave: no file outlives its snapshot (T5), and none is written
	// for a newer snapshot of the same ID.
	d.trees.mu.Lock()
	defer d.trees.mu.Unlock()
	if d.trees.m[id] != e {
		return err
	}
	if err == nil {
		err = d.saveTree(id, t)
	}
	if err != nil && ctx.Err() != nil {
		return err // stays pending; the next open recomputes it
	}
	if err != nil {
		e.err = fmt.Errorf("snapshot %s: hash tree: %w", id, err)
		close(e.done)
		return err
	}
	d.trees.publishLocked(e, t)
	return nil
}

// errSnapshotGone stops a computation whose snapshot was deleted.
var errSnapshotGone = errors.New("snapshot deleted while its tree was computed")

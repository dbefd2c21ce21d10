package repo

import (
	"context"
	"fmt"
)

// A restore point may reference blobs that no index file holds any more:
// `repair index` drops the blobs of a pack that was lost or whose header
// is unreadable, but the points made before still name them. A writer
// must never carry such a reference into a new point (restic re-reads
// what its index lacks), so:
//
//   - ParentLost walks the parent's page tree and returns the slots whose
//     page or chunk the index lacks; the caller reads them again from the
//     disk and puts them, like changed slots;
//   - every parent page the writer loads has those slots replaced by
//     lostID, and storePage refuses a page that still holds lostID, so a
//     slot the caller failed to read again fails the commit (ErrIncomplete)
//     instead of committing a point that cannot be restored;
//   - a parent page the index lacks is never reused by ID, and one it
//     holds is reused only once ParentLost has walked it (else Commit
//     loads and checks it).

// lostID marks, in a page the writer inherited, a slot whose blob no
// index file holds. It is never stored: no real hash is all 0xff bytes.
var lostID = func() (id ID) {
	for i := range id {
		id[i] = 0xff
	}
	return id
}()

// SlotRun is the slots [First, First+N).
type SlotRun struct{ First, N uint64 }

// ParentLost (invariant 3 of docs/repository.md's write ordering: a
// manifest never inherits a blob no index file holds) returns, in order,
// the slots of the parent whose chunk, or
// whose whole page, no index file holds: the slots the caller must put
// again (read from the disk) for the commit to succeed. It loads every
// page of the parent once (a 1 TiB disk's pages are 512 MiB at most;
// fewer where the disk is empty). Call it after NewWriter, whose lock
// keeps a concurrent prune from changing the answer.
func (w *SnapshotWriter) ParentLost(ctx context.Context) ([]SlotRun, error) {
	p := w.parent
	if p == nil {
		return nil, nil
	}
	var out []SlotRun
	hit := map[uint64]bool{} // pages with lost slots
	add := func(slot, n uint64) {
		hit[slot/uint64(p.PageSlots)] = true
		if k := len(out); k > 0 && out[k-1].First+out[k-1].N == slot {
			out[k-1].N += n
			return
		}
		out = append(out, SlotRun{slot, n})
	}
	ps := uint64(p.PageSlots)
	for pi, pid := range p.Pages {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		first := uint64(pi) * ps
		switch {
		case pid.IsZero():
			continue
		case !w.r.idx.has(BlobPage, pid):
			add(first, uint64(p.pageLen(uint64(pi))))
			continue
		}
		pg, err := w.r.loadPage(ctx, w.r.idx, p, uint64(pi))
		if err != nil {
			return nil, err
		}
		for s, id := range pg {
			if !id.IsZero() && !w.r.idx.has(BlobChunk, id) {
				add(first+uint64(s), 1)
			}
		}
	}
	w.mu.Lock()
	w.parentOK = hit
	w.mu.Unlock()
	return out, nil
}

// checkInherited makes sure a page about to be reused by ID names no
// blob the index lacks, by loading it unless ParentLost already walked
// the parent: a caller that skips ParentLost pays the walk at Commit
// instead of committing a point that cannot be restored.
func (w *SnapshotWriter) checkInherited(ctx context.Context, pi uint64) error {
	w.mu.Lock()
	ok := w.parentOK != nil && !w.parentOK[pi]
	w.mu.Unlock()
	if ok || w.parent.Pages[pi].IsZero() {
		return nil
	}
	pg, err := w.basePage(ctx, pi)
	if err != nil {
		return err
	}
	return checkPage(pi, w.r.cfg.PageSlots, pg)
}

// markLost replaces, in a page inherited from the parent, every chunk ID
// no index file holds with lostID.
func (w *SnapshotWriter) markLost(pg []ID) {
	for s, id := range pg {
		if !id.IsZero() && !w.r.idx.has(BlobChunk, id) {
			pg[s] = lostID
		}
	}
}

// checkPage refuses a page that still holds lostID: committing it would
// make a point that cannot be restored.
func checkPage(pi uint64, pageSlots uint32, pg []ID) error {
	for s, id := range pg {
		if id == lostID {
			return fmt.Errorf("repo: slot %d: the parent's chunk is in no index file (its pack was lost) and was not read again; "+
				"a full backup reads every slot: %w", pi*uint64(pageSlots)+uint64(s), ErrIncomplete)
		}
	}
	return nil
}

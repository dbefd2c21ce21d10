package repo

import (
	"cmp"
	"context"
	"fmt"
	"slices"
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
	ps := uint64(p.PageSlots)
	var whole []SlotRun // pages whose blob no index file holds
	var want []pageBlob
	for pi, pid := range p.Pages {
		if pid.IsZero() {
			continue
		}
		if loc, ok := w.r.idx.lookup(BlobPage, pid); ok {
			want = append(want, pageBlob{uint64(pi), loc})
		} else {
			whole = append(whole, SlotRun{uint64(pi) * ps, uint64(p.pageLen(uint64(pi)))})
		}
	}
	lost, cache, err := w.walkParentPages(ctx, want)
	if err != nil {
		return nil, err
	}
	var out []SlotRun
	hit := map[uint64]bool{} // pages with lost slots
	for _, r := range mergeSlotRuns(whole, lost) {
		hit[r.First/ps] = true
		if k := len(out); k > 0 && out[k-1].First+out[k-1].N == r.First {
			out[k-1].N += r.N
		} else {
			out = append(out, r)
		}
	}
	w.mu.Lock()
	w.parentOK, w.pageCache = hit, cache
	w.mu.Unlock()
	return out, nil
}

// walkParentPages loads the parent's pages in want (pageload.go) and
// returns, sorted, the slots whose chunk no index file holds, and the
// pages' plaintext up to pageCacheBytes for the writer to reuse.
func (w *SnapshotWriter) walkParentPages(ctx context.Context, want []pageBlob) ([]SlotRun, map[uint64][]byte, error) {
	p, ps := w.parent, uint64(w.parent.PageSlots)
	var lost []SlotRun
	cache, cached := map[uint64][]byte{}, 0
	err := w.r.loadPages(ctx, p, want, func(pi uint64, plain []byte) error {
		err := eachPageID(plain, p.pageLen(pi), func(s int, id ID) {
			if !w.r.idx.has(BlobChunk, id) {
				lost = append(lost, SlotRun{pi*ps + uint64(s), 1})
			}
		})
		if err == nil && cached+len(plain) <= pageCacheBytes {
			cache[pi] = append([]byte(nil), plain...) // plain may alias the load buffer
			cached += len(plain)
		}
		return err
	})
	slices.SortFunc(lost, func(a, b SlotRun) int { return cmp.Compare(a.First, b.First) })
	return lost, cache, err
}

// mergeSlotRuns merges two sorted, disjoint lists of slot runs into one.
func mergeSlotRuns(a, b []SlotRun) []SlotRun {
	out := make([]SlotRun, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].First < b[0].First) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
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

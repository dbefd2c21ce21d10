package repo

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/backend"
)

// RepoStats are the totals `blockwise stats` shows.
type RepoStats struct {
	Points int
	// LogicalBytes: the chunk bytes of every restore point, a chunk
	// counted once per slot that holds it (zero slots hold nothing).
	LogicalBytes int64
	// UniqueBytes: the bytes of the distinct chunks restore points hold.
	UniqueBytes int64
	// StoredBytes: the pack files (compressed, encrypted, with headers).
	StoredBytes int64
}

// Stats totals the repository under a shared lock. Each distinct index
// page is loaded once: pages are content-addressed, and an incremental
// writes only the pages it touched, so its others are its parent's. The
// distinct chunks are told apart by a blobSet (62 bits of their ID, 11–21
// bytes a chunk, sized once from the index): a collision, under 10⁻⁴
// likely among 16 M chunks, would leave one chunk out of UniqueBytes.
func (r *Repository) Stats(ctx context.Context) (*RepoStats, error) {
	lock, err := r.LockRead(ctx) // a prune meanwhile would remove pages we read
	if err != nil {
		return nil, fmt.Errorf("repo: stats: %w", err)
	}
	defer lock.KeepFresh(ctx)()
	st := &RepoStats{}
	pages := map[ID]int64{} // page → its chunk bytes
	unique := newBlobSet(r.idx.count())
	err = r.EachManifest(ctx, func(m *Manifest) error {
		st.Points++
		for pi, pid := range m.Pages {
			if pid.IsZero() {
				continue
			}
			n, ok := pages[pid]
			if !ok {
				var err error
				if n, err = r.pageStats(ctx, m, uint64(pi), unique, st); err != nil {
					return err
				}
				pages[pid] = n
			}
			st.LogicalBytes += n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = r.be.List(ctx, backend.Data, func(fi backend.FileInfo) error {
		st.StoredBytes += fi.Size
		return nil
	})
	return st, err
}

// pageStats returns the chunk bytes of page pi of m, and adds the chunks
// not seen before to unique and st.UniqueBytes.
func (r *Repository) pageStats(ctx context.Context, m *Manifest, pi uint64, unique *blobSet, st *RepoStats) (int64, error) {
	pg, err := r.loadPage(ctx, r.idx, m, pi)
	if err != nil {
		return 0, err
	}
	var n int64
	for s, id := range pg {
		if id.IsZero() {
			continue
		}
		loc, ok := r.idx.lookup(BlobChunk, id)
		if !ok {
			return 0, fmt.Errorf("repo: manifest %v slot %d: chunk %v in no index file: %w", m.ID.Short(), pi*uint64(m.PageSlots)+uint64(s), id.Short(), ErrIncomplete)
		}
		n += int64(loc.Raw)
		if !unique.has(BlobChunk, id) {
			unique.add(BlobChunk, id)
			st.UniqueBytes += int64(loc.Raw)
		}
	}
	return n, nil
}

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

// Stats totals the repository under a shared lock, in passes whose cost
// grows linearly with the repository: the manifests, counting how many
// points use each distinct index page (pages are content-addressed, and
// an incremental writes only the pages it touched, so its others are its
// parent's); each distinct page once, counting the slots that hold each
// chunk; and a second sweep of the index files, giving each chunk its
// size. It reads the index files itself, as an index of the pages alone
// (pageIndex) then the sweep, whatever r's index holds: an index of every
// chunk spills to sorted runs past Options.IndexMemoryBlobs, and building
// it made Stats grow 16 times from 1 M to 10 M chunks; looking each
// slot's chunk up in it read a block of a run per slot
// (docs/performance.md, "Repositories of millions of chunks"). Chunks are
// told apart by 62 bits of their ID (blobSet, sized once from the index
// files' size): a collision, under 10⁻⁴ likely among 16 M chunks, would
// leave one chunk out of UniqueBytes and count its slots at the other's
// size.
func (r *Repository) Stats(ctx context.Context) (*RepoStats, error) {
	lock, err := r.LockRead(ctx) // a prune meanwhile would remove pages we read
	if err != nil {
		return nil, fmt.Errorf("repo: stats: %w", err)
	}
	defer lock.KeepFresh(ctx)()
	files, size, err := r.indexFiles(ctx)
	if err != nil {
		return nil, err
	}
	x, err := r.pageIndex(ctx, files)
	if err != nil {
		return nil, err
	}
	defer x.close()
	st := &RepoStats{}
	pages, err := r.pageUses(ctx, st)
	if err != nil {
		return nil, err
	}
	refs := newBlobCounts(int(size / indexEntrySize))
	for _, p := range pages {
		if err := r.countPage(ctx, x, p, refs); err != nil {
			return nil, err
		}
	}
	if err := r.sizeChunks(ctx, files, refs, st); err != nil {
		return nil, err
	}
	err = r.be.List(ctx, backend.Data, func(fi backend.FileInfo) error {
		st.StoredBytes += fi.Size
		return nil
	})
	return st, err
}

// pageUse is a distinct index page: its ID and size, where it was first
// seen (for errors) and how many points use it. Not the manifest: one of
// a large disk holds 8192 page IDs, and Stats must not keep every point.
type pageUse struct {
	id, point ID
	pi        uint64
	slots     int
	uses      uint32
}

// pageUses counts the points into st and returns their distinct pages.
func (r *Repository) pageUses(ctx context.Context, st *RepoStats) ([]*pageUse, error) {
	byID := map[ID]*pageUse{}
	var pages []*pageUse
	err := r.EachManifest(ctx, func(m *Manifest) error {
		st.Points++
		for pi, pid := range m.Pages {
			if pid.IsZero() {
				continue
			}
			if p, ok := byID[pid]; ok {
				p.uses++
				continue
			}
			p := &pageUse{id: pid, point: m.ID, pi: uint64(pi), slots: m.pageLen(uint64(pi)), uses: 1}
			byID[pid] = p
			pages = append(pages, p)
		}
		return nil
	})
	return pages, err
}

// countPage adds p's chunks to refs, each slot counting once per point
// using the page.
func (r *Repository) countPage(ctx context.Context, x *index, p *pageUse, refs *blobSet) error {
	data, err := r.loadBlobFrom(ctx, x, BlobPage, p.id)
	if err == nil {
		err = eachPageID(data, p.slots, func(_ int, id ID) { refs.addN(BlobChunk, id, p.uses) })
	}
	if err != nil {
		return fmt.Errorf("repo: manifest %v page %d: %w", p.point.Short(), p.pi, err)
	}
	return nil
}

// sizeChunks sweeps the index files once: each chunk in refs adds its size to
// UniqueBytes, and its size times its count to LogicalBytes. A chunk no
// index file holds fails the totals.
func (r *Repository) sizeChunks(ctx context.Context, files []backend.FileInfo, refs *blobSet, st *RepoStats) error {
	found := 0
	err := r.sweepIndex(ctx, files, func(e *packEntry) {
		if e.Type != BlobChunk {
			return
		}
		if n, ok := refs.indexedFirst(BlobChunk, e.ID); ok {
			found++
			st.UniqueBytes += int64(e.Raw)
			st.LogicalBytes += int64(n) * int64(e.Raw)
		}
	})
	if err != nil {
		return err
	}
	if missing := refs.n - found; missing > 0 {
		return fmt.Errorf("repo: stats: %d chunk(s) restore points hold are in no index file: %w", missing, ErrIncomplete)
	}
	return nil
}

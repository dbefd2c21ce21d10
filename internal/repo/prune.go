package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/backend"
)

// PruneStats reports what Prune removed.
type PruneStats struct {
	PacksRemoved   int
	PacksKept      int
	BytesRemoved   int64
	IndexRewritten bool
}

// Prune deletes data no manifest references (mark and sweep) under an
// exclusive lock. A pack is deleted only when none of its blobs is used;
// partly used packs are kept whole (no repacking yet). Packs no index
// names (from interrupted backups) are deleted too: the exclusive lock
// guarantees no backup is running. Order: new index → old index files
// removed → packs removed, so a crash at any step leaves an index that
// names only existing packs (plus, at worst, unindexed packs).
func (r *Repository) Prune(ctx context.Context) (*PruneStats, error) {
	l, err := r.Lock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer l.Unlock(context.WithoutCancel(ctx))
	if err := r.loadIndex(ctx); err != nil {
		return nil, err
	}
	used, err := r.mark(ctx)
	if err != nil {
		return nil, fmt.Errorf("repo: prune: mark: %w", err)
	}
	return r.sweep(ctx, used)
}

// mark collects every blob referenced by a manifest. Any failure aborts:
// deleting with an incomplete picture would destroy live data.
func (r *Repository) mark(ctx context.Context) (map[blobKey]bool, error) {
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return nil, err
	}
	used := map[blobKey]bool{}
	for _, m := range ms {
		for pi, pid := range m.Pages {
			if pid.IsZero() || used[blobKey{BlobPage, pid}] {
				continue
			}
			used[blobKey{BlobPage, pid}] = true
			pg, err := r.loadPage(ctx, r.idx, m, uint64(pi))
			if err != nil {
				return nil, err
			}
			for _, cid := range pg {
				if !cid.IsZero() {
					used[blobKey{BlobChunk, cid}] = true
				}
			}
		}
	}
	return used, nil
}

func (r *Repository) sweep(ctx context.Context, used map[blobKey]bool) (*PruneStats, error) {
	packs, oldFiles := r.idx.snapshot()
	st := &PruneStats{}
	var keep []packInfo
	var drop []ID
	for id, entries := range packs {
		if packUsed(entries, used) {
			keep = append(keep, packInfo{ID: id, Entries: entries})
		} else {
			drop = append(drop, id)
		}
	}
	orphans, err := r.orphanPacks(ctx, packs)
	if err != nil {
		return nil, err
	}
	st.PacksKept = len(keep)
	if len(drop) > 0 {
		if err := r.rewriteIndex(ctx, keep, oldFiles); err != nil {
			return nil, err
		}
		st.IndexRewritten = true
	}
	for _, id := range append(drop, orphans...) {
		n, err := r.removePack(ctx, id)
		if err != nil {
			return st, err
		}
		st.PacksRemoved++
		st.BytesRemoved += n
	}
	return st, nil
}

func packUsed(entries []packEntry, used map[blobKey]bool) bool {
	for _, e := range entries {
		if used[blobKey{e.Type, e.ID}] {
			return true
		}
	}
	return false
}

func (r *Repository) orphanPacks(ctx context.Context, indexed map[ID][]packEntry) ([]ID, error) {
	var out []ID
	err := r.be.List(ctx, backend.Data, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if _, ok := indexed[id]; err == nil && !ok {
			out = append(out, id)
		}
		return nil
	})
	return out, err
}

// rewriteIndex replaces all index files by one naming only kept packs.
func (r *Repository) rewriteIndex(ctx context.Context, keep []packInfo, old []string) error {
	x := newIndex()
	if len(keep) > 0 {
		id, err := r.saveFile(ctx, backend.Index, sealEnvelope(r.crypt, indexMagic, encodeIndex(keep)))
		if err != nil {
			return err
		}
		x.add(id.String(), keep)
		old = removeString(old, id.String())
	}
	for _, n := range old {
		err := r.be.Remove(ctx, backend.Handle{Type: backend.Index, Name: n})
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("repo: prune: remove index %s: %w", n, err)
		}
	}
	r.idx.replace(x)
	return nil
}

func removeString(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

func (r *Repository) removePack(ctx context.Context, id ID) (int64, error) {
	h := backend.Handle{Type: backend.Data, Name: id.String()}
	fi, err := r.be.Stat(ctx, h)
	if err == nil {
		err = r.be.Remove(ctx, h)
	}
	if err != nil && !errors.Is(err, backend.ErrNotFound) {
		return 0, fmt.Errorf("repo: prune: remove pack %v: %w", id.Short(), err)
	}
	return fi.Size, nil
}

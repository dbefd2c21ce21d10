package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/blockwise/blockwise/internal/backend"
)

// A writer's ParentLost walks every page of the parent, and the writer
// then loads again the pages it changes. One load per page (a pread of a
// pack written around the page cache, so from the disk) made that walk
// most of a scattered incremental's time on a large disk: 4096 pages, one
// disk read each. So the walk loads the pages of each pack together in
// ranged reads (blobs at most maxGap apart in one read, as restores do)
// and keeps what it decoded, up to pageCacheBytes, for the writer.

// pageCacheBytes bounds the parent pages a writer keeps between its
// ParentLost walk and their first change.
const pageCacheBytes = 64 << 20

// pageBlob is one page of a manifest to load: its number and location.
type pageBlob struct {
	pi  uint64
	loc blobLoc
}

// loadPages loads the pages of m listed in want (page numbers of indexed,
// non-zero pages), a pack at a time in ranged reads, and calls fn with
// each page's plaintext (valid only during the call), in no fixed order.
func (r *Repository) loadPages(ctx context.Context, m *Manifest, want []pageBlob, fn func(pi uint64, plain []byte) error) error {
	byPack := map[ID][]pageBlob{}
	for _, p := range want {
		byPack[p.loc.Pack] = append(byPack[p.loc.Pack], p)
	}
	for pack, ps := range byPack {
		if err := ctx.Err(); err != nil {
			return err
		}
		sort.Slice(ps, func(a, b int) bool { return ps[a].loc.Offset < ps[b].loc.Offset })
		for start := 0; start < len(ps); {
			end, lo := start+1, int64(ps[start].loc.Offset)
			hi := lo + int64(ps[start].loc.Stored)
			for end < len(ps) && int64(ps[end].loc.Offset) <= hi+maxGap {
				hi = max(hi, int64(ps[end].loc.Offset)+int64(ps[end].loc.Stored))
				end++
			}
			if err := r.decodePageRange(ctx, m, pack, ps[start:end], lo, hi, fn); err != nil {
				return err
			}
			start = end
		}
	}
	return nil
}

// decodePageRange loads [lo, hi) of pack and hands each page in it to fn.
func (r *Repository) decodePageRange(ctx context.Context, m *Manifest, pack ID, ps []pageBlob, lo, hi int64, fn func(uint64, []byte) error) error {
	h := backend.Handle{Type: backend.Data, Name: pack.String()}
	buf, err := backend.LoadAll(ctx, r.be, h, lo, hi-lo)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("repo: manifest %v: pack %v missing: %w (%w)", m.ID.Short(), pack, ErrCorrupt, err)
	case err != nil:
		return fmt.Errorf("repo: manifest %v: load pack %v: %w", m.ID.Short(), pack, err)
	case int64(len(buf)) != hi-lo:
		return fmt.Errorf("repo: pack %v: short read of %d bytes at %d: %w", pack, len(buf), lo, ErrCorrupt)
	}
	for _, p := range ps {
		off := int64(p.loc.Offset) - lo
		plain, err := r.decodeBlob(p.loc.packEntry, pack, buf[off:off+int64(p.loc.Stored)])
		if err == nil {
			err = fn(p.pi, plain)
		}
		if err != nil {
			return fmt.Errorf("repo: manifest %v page %d: %w", m.ID.Short(), p.pi, err)
		}
	}
	return nil
}

// cachedPage returns (and forgets) the parent's page pi as ParentLost
// kept it, if it did.
func (w *SnapshotWriter) cachedPage(pi uint64) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, ok := w.pageCache[pi]
	if ok {
		delete(w.pageCache, pi)
	}
	return b, ok
}

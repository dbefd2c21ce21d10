package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backend"
)

// RepairIndexOptions tunes RepairIndex.
type RepairIndexOptions struct {
	// ReadAllPacks reads every pack's header, trusting no index file.
	// Otherwise the entries of readable index files are kept for the
	// packs they name that exist, and only the other packs are read.
	ReadAllPacks bool
}

// RepairIndexResult says what RepairIndex found and wrote.
type RepairIndexResult struct {
	Packs         int      `json:"packs"`              // packs the new index names
	Blobs         int      `json:"blobs"`              // blobs the new index names
	PacksRead     int      `json:"packsRead"`          // packs whose headers were read
	Damaged       []string `json:"damagedPacks"`       // packs whose header could not be read: not indexed
	Missing       int      `json:"missingPacks"`       // packs an old index file named that do not exist
	BadIndexFiles []string `json:"badIndexFiles"`      // old index files that could not be read
	OldIndexFiles int      `json:"oldIndexFiles"`      // index files removed
	NewIndexFiles int      `json:"newIndexFiles"`      // index files written
	Warnings      []string `json:"warnings,omitempty"` // files in the data directory that are not packs: left alone
}

// RepairIndex rebuilds the index from the packs themselves (restic's
// `repair index`): each pack's header, sealed at its end, names its
// blobs. It is the way back from a lost or damaged index file, which
// otherwise leaves live blobs unindexed: unreadable by restores and
// refused by Prune (ErrIncomplete).
//
// Under an exclusive lock: new index files naming every readable pack
// are written first, then every old index file is removed, so a crash
// leaves at worst duplicate entries, which readers tolerate. A pack whose
// header cannot be read is reported and left alone (not indexed, so the
// next Prune removes it unless its blobs are still referenced, in which
// case Prune refuses). Open the repository with OpenNoIndex when an
// index file is damaged: Open refuses such a repository.
func (r *Repository) RepairIndex(ctx context.Context, o RepairIndexOptions) (*RepairIndexResult, error) {
	l, err := r.Lock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer l.Unlock(context.WithoutCancel(ctx))
	sizes, stray, err := r.packSizes(ctx)
	if err != nil {
		return nil, err
	}
	oldFiles, err := r.listNames(ctx, backend.Index)
	if err != nil {
		return nil, err
	}
	rp := &indexRepair{r: r, iw: newIndexWriter(r), sizes: sizes, done: map[ID]bool{}, res: &RepairIndexResult{Warnings: stray}}
	if !o.ReadAllPacks {
		if err := rp.trustIndexFiles(ctx, oldFiles); err != nil {
			return nil, err
		}
	}
	if err := rp.readPackHeaders(ctx); err != nil {
		return nil, err
	}
	if rp.res.OldIndexFiles, err = rp.iw.replace(ctx, oldFiles); err != nil {
		return nil, err
	}
	rp.res.NewIndexFiles = len(rp.iw.written)
	return rp.res, nil
}

// indexRepair streams every pack it settles into new index files, so it
// holds a few bytes a pack, not every entry.
type indexRepair struct {
	r     *Repository
	iw    *indexWriter
	sizes map[ID]int64 // the pack files
	done  map[ID]bool  // packs named in the new index
	res   *RepairIndexResult
}

func (rp *indexRepair) add(ctx context.Context, p packInfo) error {
	rp.done[p.ID] = true
	rp.res.Packs++
	rp.res.Blobs += len(p.Entries)
	return rp.iw.add(ctx, p)
}

// trustIndexFiles takes the entries of every readable index file for the
// packs that exist with room for them; a damaged file is reported and
// its packs are read instead.
func (rp *indexRepair) trustIndexFiles(ctx context.Context, names []string) error {
	missing := map[ID]bool{}
	for _, n := range names {
		packs, err := rp.r.readIndexFile(ctx, n)
		if errors.Is(err, ErrCorrupt) {
			rp.res.BadIndexFiles = append(rp.res.BadIndexFiles, n)
			continue
		}
		if err != nil {
			return err
		}
		for _, p := range packs {
			size, ok := rp.sizes[p.ID]
			switch {
			case !ok:
				missing[p.ID] = true
			case packDataEnd(p.Entries) <= size && !rp.done[p.ID]:
				if err := rp.add(ctx, p); err != nil {
					return err
				}
			}
		}
	}
	rp.res.Missing = len(missing)
	return nil
}

// readPackHeaders reads the header of every pack not yet named, a few at
// a time. A damaged header is reported; any other error aborts.
func (rp *indexRepair) readPackHeaders(ctx context.Context) error {
	var todo []ID
	for id := range rp.sizes {
		if !rp.done[id] {
			todo = append(todo, id)
		}
	}
	slices.SortFunc(todo, func(a, b ID) int { return slices.Compare(a[:], b[:]) })
	var mu sync.Mutex // rp, from the readers
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, id := range todo {
		g.Go(func() error {
			entries, err := rp.r.readPackHeader(gctx, id, rp.sizes[id])
			if err != nil && !errors.Is(err, ErrCorrupt) {
				return fmt.Errorf("repo: repair index: pack %v: %w", id.Short(), err)
			}
			mu.Lock()
			defer mu.Unlock()
			rp.res.PacksRead++
			if err != nil {
				rp.res.Damaged = append(rp.res.Damaged, id.String())
				return nil
			}
			return rp.add(gctx, packInfo{ID: id, Entries: entries})
		})
	}
	err := g.Wait()
	slices.Sort(rp.res.Damaged)
	return err
}

// readPackHeader reads a pack's entries from its end: one ranged load
// covers the header of most packs, a second the rest. A pack named by the
// hash of its whole content (written before packs were named by their
// header) is read whole.
func (r *Repository) readPackHeader(ctx context.Context, id ID, size int64) ([]packEntry, error) {
	if size < packTrailerSize {
		return nil, fmt.Errorf("pack %v: too short: %w", id.Short(), ErrCorrupt)
	}
	h := backend.Handle{Type: backend.Data, Name: id.String()}
	n := min(size, 64<<10)
	tail, err := backend.LoadAll(ctx, r.be, h, size-n, n)
	if err != nil {
		return nil, err
	}
	hl, err := decodePackTrailer(tail[len(tail)-packTrailerSize:], size)
	if err != nil {
		return nil, fmt.Errorf("pack %v: %w", id.Short(), err)
	}
	if want := hl + packTrailerSize; want > n {
		if tail, err = backend.LoadAll(ctx, r.be, h, size-want, want); err != nil {
			return nil, err
		}
	} else {
		tail = tail[n-want:]
	}
	if packID(tail) != id {
		data, err := backend.LoadAll(ctx, r.be, h, 0, 0)
		if err != nil {
			return nil, err
		}
		return r.parsePack(id, data)
	}
	return r.openPackHeader(id, tail[:hl], size-packTrailerSize-hl)
}

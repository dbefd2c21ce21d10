package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"
)

// PruneStats reports what Prune removed.
type PruneStats struct {
	PacksRemoved   int
	PacksKept      int
	PacksRepacked  int // partly used packs whose live blobs were moved
	BytesRemoved   int64
	IndexRewritten bool
}

// Prune deletes data no manifest references (mark and sweep) under an
// exclusive lock. A pack with no used blob is deleted; a pack with at least
// RepackUnused of its bytes unused has its live blobs copied into new
// packs first, then is deleted. Packs no index
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
// deleting with an incomplete picture would destroy live data. Pages
// walked are remembered exactly: a page wrongly taken as walked would
// leave its chunks unmarked.
func (r *Repository) mark(ctx context.Context) (blobSet, error) {
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return nil, err
	}
	used, walked := blobSet{}, map[ID]bool{}
	for _, m := range ms {
		for pi, pid := range m.Pages {
			if pid.IsZero() || walked[pid] {
				continue
			}
			walked[pid] = true
			used.add(BlobPage, pid)
			pg, err := r.loadPage(ctx, r.idx, m, uint64(pi))
			if err != nil {
				return nil, err
			}
			for _, cid := range pg {
				if !cid.IsZero() {
					used.add(BlobChunk, cid)
				}
			}
		}
	}
	return used, nil
}

// blobSet holds blobs by 64 bits of their type and ID, about 10 bytes a
// blob where a map of whole keys took ~50. It may say yes for a blob never
// added (a collision, about n/2⁶⁴ likely per lookup among n blobs): prune
// only keeps what it holds, so such an error keeps a dead blob, and never
// drops a live one.
// Its values record whether prune's sweep found the blob in an index file.
type blobSet map[uint64]bool

func blobSetKey(t BlobType, id ID) uint64 {
	return binary.LittleEndian.Uint64(id[:8]) ^ uint64(t)*0x9e3779b97f4a7c15
}

func (s blobSet) add(t BlobType, id ID) {
	k := blobSetKey(t, id)
	if _, ok := s[k]; !ok {
		s[k] = false
	}
}

func (s blobSet) has(t BlobType, id ID) bool {
	_, ok := s[blobSetKey(t, id)]
	return ok
}

// indexed records that an index file names the blob and says whether it
// is in the set.
func (s blobSet) indexed(t BlobType, id ID) bool {
	k := blobSetKey(t, id)
	if _, ok := s[k]; !ok {
		return false
	}
	s[k] = true
	return true
}

// unindexed counts the blobs indexed was never called for.
func (s blobSet) unindexed() int {
	n := 0
	for _, found := range s {
		if !found {
			n++
		}
	}
	return n
}

func (r *Repository) sweep(ctx context.Context, used blobSet) (*PruneStats, error) {
	packs, oldFiles, err := r.idx.snapshot()
	if err != nil {
		return nil, fmt.Errorf("repo: prune: %w", err)
	}
	keep, repack, drop := classifyPacks(packs, used)
	// A live blob no index names sits in a pack that looks orphaned (an
	// index file was lost): deleting now would destroy it for good.
	if n := used.unindexed(); n > 0 {
		return nil, fmt.Errorf("repo: prune: %d blob(s) in use are in no index file; nothing was removed (run repair index): %w", n, ErrIncomplete)
	}
	orphans, err := r.orphanPacks(ctx, packs)
	if err != nil {
		return nil, err
	}
	st := &PruneStats{PacksRepacked: len(repack)}
	// New packs first: until the index names them they are mere orphans.
	moved, err := r.repack(ctx, repack, used)
	if err != nil {
		return nil, err
	}
	keep = append(keep, moved...)
	// Unencrypted packs are deterministic: a repacked pack can have the
	// very name of an orphan. It is live now, so it must not be removed.
	orphans = slices.DeleteFunc(orphans, func(o packInfo) bool {
		return slices.ContainsFunc(moved, func(m packInfo) bool { return m.ID == o.ID })
	})
	st.PacksKept = len(keep)
	if len(drop)+len(repack) > 0 {
		if err := r.rewriteIndex(ctx, keep, oldFiles); err != nil {
			return nil, err
		}
		st.IndexRewritten = true
	}
	for _, p := range append(append(drop, repack...), orphans...) {
		n, err := r.removePack(ctx, p.ID)
		if err != nil {
			return st, err
		}
		st.PacksRemoved++
		st.BytesRemoved += n
	}
	for _, p := range moved {
		st.BytesRemoved -= packBytes(p.Entries)
	}
	return st, nil
}

// RepackUnused is the fraction of a pack's bytes that must be unused
// before Prune rewrites the pack's live blobs into new packs.
var RepackUnused = 0.3

// classifyPacks splits packs into those kept as they are, those worth
// repacking, and those with no live blob.
func classifyPacks(packs map[ID][]packEntry, used blobSet) (keep, repack, drop []packInfo) {
	for id, entries := range packs {
		var live, total int64
		for _, e := range entries {
			total += int64(e.Stored)
			if used.indexed(e.Type, e.ID) {
				live += int64(e.Stored)
			}
		}
		p := packInfo{ID: id, Entries: entries}
		switch {
		case live == 0:
			drop = append(drop, p)
		case float64(total-live) >= RepackUnused*float64(total):
			repack = append(repack, p)
		default:
			keep = append(keep, p)
		}
	}
	return keep, repack, drop
}

func packBytes(entries []packEntry) int64 {
	var n int64
	for _, e := range entries {
		n += int64(e.Stored)
	}
	return n
}

// repack copies the live blobs of packs into new packs. Each blob is
// verified before it is copied, and any damage aborts the prune: its
// source pack must then stay. Blobs are copied sealed; their associated
// data binds type and ID, not position, so they stay valid.
func (r *Repository) repack(ctx context.Context, packs []packInfo, used blobSet) ([]packInfo, error) {
	pk := &packer{r: r}
	copied := map[blobKey]bool{}
	for _, p := range packs {
		data, err := backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.Data, Name: p.ID.String()}, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("repo: prune: repack %v: %w", p.ID.Short(), err)
		}
		for _, e := range p.Entries {
			k := blobKey{e.Type, e.ID}
			if !used.has(k.Type, k.ID) || copied[k] {
				continue
			}
			if uint64(e.Offset)+uint64(e.Stored) > uint64(len(data)) {
				return nil, fmt.Errorf("repo: prune: pack %v shorter than index: %w", p.ID, ErrCorrupt)
			}
			sealed := data[e.Offset : e.Offset+e.Stored]
			if _, err := r.decodeBlob(e, p.ID, sealed); err != nil {
				return nil, fmt.Errorf("repo: prune: %w", err)
			}
			copied[k] = true
			if err := pk.addSealed(ctx, e, sealed); err != nil {
				return nil, err
			}
		}
	}
	if err := pk.flush(ctx); err != nil {
		return nil, err
	}
	return pk.done, nil
}

func packUsed(entries []packEntry, used blobSet) bool {
	for _, e := range entries {
		if used.has(e.Type, e.ID) {
			return true
		}
	}
	return false
}

func (r *Repository) orphanPacks(ctx context.Context, indexed map[ID][]packEntry) ([]packInfo, error) {
	var out []packInfo
	err := r.be.List(ctx, backend.Data, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if _, ok := indexed[id]; err == nil && !ok {
			out = append(out, packInfo{ID: id})
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
			return err // x is still empty: nothing spilled to close
		}
		x.add(id.String(), keep)
		old = removeString(old, id.String())
	}
	for _, n := range old {
		err := r.be.Remove(ctx, backend.Handle{Type: backend.Index, Name: n})
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			x.close()
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

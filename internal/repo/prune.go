package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"
)

// PruneStats reports what Prune removed (with DryRun: would remove; the
// bytes then leave out the headers of the packs repacking would write).
type PruneStats struct {
	PacksRemoved   int   `json:"packsRemoved"`
	PacksKept      int   `json:"packsKept"`
	PacksRepacked  int   `json:"packsRepacked"` // partly used packs whose live blobs were moved
	BytesRemoved   int64 `json:"bytesRemoved"`
	IndexRewritten bool  `json:"indexRewritten"`
	DryRun         bool  `json:"dryRun"`
	// Warnings name files in the data directory that are not packs:
	// left alone, as check reports them.
	Warnings []string `json:"warnings,omitempty"`
}

// PruneOptions tune PruneWith.
type PruneOptions struct {
	// DryRun decides as Prune would and reports it, writing and removing
	// nothing. It takes the exclusive lock all the same: beside a running
	// backup, that backup's packs would count as removable.
	DryRun bool
}

// Prune deletes data no manifest references (mark and sweep) under an
// exclusive lock. A pack with no used blob is deleted; a pack with at least
// Options.RepackUnused of its bytes unused has its live blobs copied into new
// packs first, then is deleted. Packs no index
// names (from interrupted backups) are deleted too: the exclusive lock
// guarantees no backup is running. Order: new index → old index files
// removed → packs removed, so a crash at any step leaves an index that
// names only existing packs (plus, at worst, unindexed packs).
func (r *Repository) Prune(ctx context.Context) (*PruneStats, error) {
	return r.PruneWith(ctx, PruneOptions{})
}

// PruneWith is Prune with options. It reads the index files itself
// under the lock, as an index of the pages alone for the mark (pageIndex)
// then twice more for the sweep, instead of an index of every blob: that
// spills to sorted runs past Options.IndexMemoryBlobs, and building it
// (twice, with the one Open built) made Prune grow 16 times from 1 M to
// 10 M chunks (docs/performance.md, "Repositories of millions of
// chunks"). r's own index is brought up to date at the end, unless r was
// opened without one (OpenNoIndex).
func (r *Repository) PruneWith(ctx context.Context, o PruneOptions) (*PruneStats, error) {
	l, err := r.Lock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer l.Unlock(context.WithoutCancel(ctx))
	files, size, err := r.indexFiles(ctx)
	if err != nil {
		return nil, err
	}
	x, err := r.pageIndex(ctx, files)
	if err != nil {
		return nil, err
	}
	used, err := r.mark(ctx, x, int(size/indexEntrySize))
	x.close()
	if err != nil {
		return nil, fmt.Errorf("repo: prune: mark: %w", err)
	}
	st, err := r.sweep(ctx, files, used, o.DryRun)
	if err != nil || st.IndexRewritten && !o.DryRun || r.noIndex.Load() {
		return st, err // a rewrite read the new index back (indexWriter.replace)
	}
	return st, r.refreshIndex(ctx)
}

// mark collects every blob referenced by a manifest, finding pages in x;
// hint is about how many blobs the index files name. Any failure aborts:
// deleting with an incomplete picture would destroy live data. Pages
// walked are remembered exactly: a page wrongly taken as walked would
// leave its chunks unmarked.
func (r *Repository) mark(ctx context.Context, x *index, hint int) (*blobSet, error) {
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return nil, err
	}
	used, walked := newBlobSet(hint), map[ID]bool{}
	for _, m := range ms {
		if m.Tree != nil {
			for _, g := range m.Tree.Groups {
				if !g.IsZero() {
					used.add(BlobPage, g)
				}
			}
		}
		for pi, pid := range m.Pages {
			if pid.IsZero() || walked[pid] {
				continue
			}
			walked[pid] = true
			used.add(BlobPage, pid)
			pg, err := r.loadPage(ctx, x, m, uint64(pi))
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

// packClass is what the sweep decided for a pack.
type packClass uint8

const (
	packKeep packClass = iota
	packRepack
	packDrop
)

// packFate is a pack's class and whether the rewrite has passed it (a
// pack named by two index files is handled at its first).
type packFate struct {
	class   packClass
	visited bool
	live    int64 // bytes of live blobs
}

// sweep classifies the indexed packs, refuses if a live blob is in none
// of them, rewrites the index without the dropped and repacked packs
// (their live blobs copied into new packs first), then removes the packs.
// It reads the index files twice, one at a time, instead of holding every
// entry: memory is the mark set plus a few bytes a pack.
func (r *Repository) sweep(ctx context.Context, files []backend.FileInfo, used *blobSet, dryRun bool) (*PruneStats, error) {
	oldFiles := make([]string, len(files))
	for i, f := range files {
		oldFiles[i] = f.Name
	}
	slices.Sort(oldFiles) // both passes must meet duplicates in the same order
	fates, err := r.classifyPacks(ctx, oldFiles, used)
	if err != nil {
		return nil, err
	}
	// A live blob no index names sits in a pack that looks orphaned (an
	// index file was lost): deleting now would destroy it for good
	// (docs/repository.md, Prune: refuse before deleting anything).
	if n := used.unindexed(); n > 0 {
		return nil, fmt.Errorf("repo: prune: %d blob(s) in use are in no index file; nothing was removed (run repair index; if it reports missing packs, back up again and forget the points check reports): %w", n, ErrIncomplete)
	}
	sizes, stray, err := r.packSizes(ctx)
	if err != nil {
		return nil, err
	}
	orphans := orphanPacks(sizes, fates)
	st := &PruneStats{DryRun: dryRun, Warnings: stray}
	var gone []ID
	for id, f := range fates {
		switch f.class {
		case packKeep:
			st.PacksKept++
		case packRepack:
			st.PacksRepacked++
			gone = append(gone, id)
		case packDrop:
			gone = append(gone, id)
		}
	}
	if dryRun {
		return dryRunStats(st, append(gone, orphans...), fates, sizes), nil
	}
	var moved []packInfo
	if len(gone) > 0 {
		if moved, err = r.rewriteIndex(ctx, oldFiles, fates, used); err != nil {
			return nil, err
		}
		st.IndexRewritten = true
		st.PacksKept += len(moved)
	}
	return st, r.removePacks(ctx, st, append(gone, orphans...), moved)
}

// dryRunStats counts what removing ids would free: their bytes, less the
// live bytes of repacked packs, which move into new packs.
func dryRunStats(st *PruneStats, ids []ID, fates map[ID]*packFate, sizes map[ID]int64) *PruneStats {
	st.IndexRewritten = st.PacksRepacked > 0 || len(ids) > 0
	for _, id := range ids {
		st.PacksRemoved++
		st.BytesRemoved += sizes[id]
		if f := fates[id]; f != nil && f.class == packRepack {
			st.BytesRemoved -= f.live
		}
	}
	return st
}

// removePacks deletes packs and counts them; the bytes of moved packs
// (the repacked blobs' new home) are not counted as removed.
func (r *Repository) removePacks(ctx context.Context, st *PruneStats, ids []ID, moved []packInfo) error {
	for _, id := range ids {
		// Unencrypted packs are deterministic: a repacked pack can have
		// the very name of an orphan. It is live now: keep it.
		if slices.ContainsFunc(moved, func(m packInfo) bool { return m.ID == id }) {
			continue
		}
		n, err := r.removePack(ctx, id)
		if err != nil {
			return err
		}
		st.PacksRemoved++
		st.BytesRemoved += n
	}
	for _, p := range moved {
		st.BytesRemoved -= packBytes(p.Entries)
	}
	return nil
}

// classifyPacks decides, index file by index file, which packs are kept
// as they are, worth repacking, or without a live blob; it records in
// used which live blobs an index file names.
func (r *Repository) classifyPacks(ctx context.Context, files []string, used *blobSet) (map[ID]*packFate, error) {
	fates := map[ID]*packFate{}
	for _, n := range files {
		packs, err := r.readIndexFile(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("repo: prune: %w", err)
		}
		for _, p := range packs {
			if fates[p.ID] != nil {
				continue
			}
			var live, total int64
			for _, e := range p.Entries {
				total += int64(e.Stored)
				if used.indexed(e.Type, e.ID) {
					live += int64(e.Stored)
				}
			}
			f := &packFate{class: packKeep, live: live}
			switch {
			case live == 0:
				f.class = packDrop
			case float64(total-live) >= r.opts.RepackUnused*float64(total):
				f.class = packRepack
			}
			fates[p.ID] = f
		}
	}
	return fates, nil
}

func packBytes(entries []packEntry) int64 {
	var n int64
	for _, e := range entries {
		n += int64(e.Stored)
	}
	return n
}

// rewriteIndex reads the index files again and writes new ones naming
// the kept packs and, as it copies the live blobs of the repacked ones,
// the new packs; then it removes the old files. New packs come first:
// until an index names them they are mere orphans.
func (r *Repository) rewriteIndex(ctx context.Context, oldFiles []string, fates map[ID]*packFate, used *blobSet) ([]packInfo, error) {
	iw := newIndexWriter(r)
	rp := &repacker{pk: &packer{r: r}, used: used, copied: map[blobKey]bool{}}
	for _, n := range oldFiles {
		packs, err := r.readIndexFile(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("repo: prune: %w", err)
		}
		if err := r.rewritePacks(ctx, packs, fates, iw, rp); err != nil {
			return nil, err
		}
	}
	if err := rp.pk.flush(ctx); err != nil {
		return nil, err
	}
	if err := rp.takeNew(ctx, iw); err != nil {
		return nil, err
	}
	_, err := iw.replace(ctx, oldFiles)
	return rp.moved, err
}

func (r *Repository) rewritePacks(ctx context.Context, packs []packInfo, fates map[ID]*packFate, iw *indexWriter, rp *repacker) error {
	for _, p := range packs {
		f := fates[p.ID]
		if f == nil || f.visited {
			continue
		}
		f.visited = true
		var err error
		switch f.class {
		case packKeep:
			err = iw.add(ctx, p)
		case packRepack:
			err = rp.repack(ctx, p)
		}
		if err == nil {
			err = rp.takeNew(ctx, iw)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// repacker copies the live blobs of packs into new packs. Each blob is
// verified before it is copied, and any damage aborts the prune: its
// source pack must then stay. Blobs are copied sealed; their associated
// data binds type and ID, not position, so they stay valid. copied is
// exact (a 64-bit key could mistake one live blob for another and skip
// it).
type repacker struct {
	pk     *packer
	used   *blobSet
	copied map[blobKey]bool
	moved  []packInfo
}

func (rp *repacker) repack(ctx context.Context, p packInfo) error {
	r := rp.pk.r
	data, err := backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.Data, Name: p.ID.String()}, 0, 0)
	if err != nil {
		return fmt.Errorf("repo: prune: repack %v: %w", p.ID.Short(), err)
	}
	for _, e := range p.Entries {
		k := blobKey{e.Type, e.ID}
		if !rp.used.has(k.Type, k.ID) || rp.copied[k] {
			continue
		}
		if uint64(e.Offset)+uint64(e.Stored) > uint64(len(data)) {
			return fmt.Errorf("repo: prune: pack %v shorter than index: %w", p.ID, ErrCorrupt)
		}
		sealed := data[e.Offset : e.Offset+e.Stored]
		if _, err := r.decodeBlob(e, p.ID, sealed); err != nil {
			return fmt.Errorf("repo: prune: %w", err)
		}
		rp.copied[k] = true
		if err := rp.pk.addSealed(ctx, e, sealed); err != nil {
			return err
		}
	}
	return nil
}

// takeNew hands the new packs uploaded so far to the index writer.
func (rp *repacker) takeNew(ctx context.Context, iw *indexWriter) error {
	done, _ := rp.pk.takeDone(1, nil)
	for _, p := range done {
		if err := iw.add(ctx, p); err != nil {
			return err
		}
		rp.moved = append(rp.moved, p)
	}
	return nil
}

// orphanPacks lists the packs (of sizes) no index file names.
func orphanPacks(sizes map[ID]int64, indexed map[ID]*packFate) []ID {
	var out []ID
	for id := range sizes {
		if _, ok := indexed[id]; !ok {
			out = append(out, id)
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

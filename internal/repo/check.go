package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/hashtree"
	"golang.org/x/sync/errgroup"
)

// CheckResult lists what Check found. Errors mean damage (each wraps
// ErrCorrupt or a backend error); warnings are harmless leftovers such as
// packs no index names (from a crashed backup), which Prune removes.
type CheckResult struct {
	Errors    []error
	Warnings  []string
	Packs     int // indexed packs
	PacksRead int // of them, read whole (CheckOptions.ReadData)
	Manifests int
	// RootsProven counts the points whose root Check proved from their
	// chunks (ReadData without ReadPack; docs/repository.md T6).
	RootsProven int
}

// Err joins the errors found (nil when there are none).
func (c *CheckResult) Err() error { return errors.Join(c.Errors...) }

func (c *CheckResult) errorf(format string, args ...any) {
	c.Errors = append(c.Errors, fmt.Errorf(format, args...))
}

// CheckOptions say how much of the data Check reads.
type CheckOptions struct {
	// ReadData reads packs whole: their hash, header and every blob
	// against its ID.
	ReadData bool
	// ReadPack, when set, picks the packs ReadData reads (restic's
	// --read-data-subset); the others are only checked to exist with the
	// size their index entries need.
	ReadPack func(pack ID) bool
}

// Check verifies the repository: every index file decodes and names
// existing packs, every manifest decodes and every page and chunk it
// references is indexed. With o.ReadData it also reads packs whole,
// checks their hash, header and each blob's content against its ID. It
// returns the result and, if any error was found, an error joining them.
// It holds a shared lock: a prune removing packs meanwhile would show as
// damage.
func (r *Repository) Check(ctx context.Context, o CheckOptions) (*CheckResult, error) {
	res := &CheckResult{}
	lock, err := r.LockRead(ctx)
	if err != nil {
		return res, fmt.Errorf("repo: check: %w", err)
	}
	defer lock.KeepFresh(ctx)()
	sizes, stray, err := r.packSizes(ctx)
	res.Warnings = append(res.Warnings, stray...)
	if err != nil {
		return res, err
	}
	var sums *leafSums // the chunks' leaves, summed as their packs are read
	if o.ReadData {
		bss, err := r.treeBlockSizes(ctx)
		if err != nil {
			return res, err
		}
		sums = r.newLeafSums(bss)
		defer sums.close()
	}
	x, good, err := r.checkIndexAndPacks(ctx, sizes, res, o, sums)
	if err != nil {
		return res, err
	}
	defer x.close()
	if err := r.checkManifests(ctx, x, good, res, o, sums); err != nil {
		return res, err
	}
	return res, res.Err()
}

// packSizes lists the pack files, and a warning for each file among them
// not named as a pack is (which no command reads, writes or removes).
func (r *Repository) packSizes(ctx context.Context) (map[ID]int64, []string, error) {
	sizes := map[ID]int64{}
	var stray []string
	err := r.be.List(ctx, backend.Data, func(fi backend.FileInfo) error {
		id, err := ParseID(fi.Name)
		if err != nil {
			stray = append(stray, fmt.Sprintf("stray data file %q", fi.Name))
			return nil
		}
		sizes[id] = fi.Size
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("repo: list packs: %w", err)
	}
	return sizes, stray, nil
}

// checkIndexAndPacks reads the index files one at a time, so one bad file
// is reported without hiding the others and no more than one file's
// entries are held at once (memory stays bounded whatever the repository
// size): each goes into the lookup index checkManifests uses, and each
// pack it names first is checked against the pack files, and read whole
// with o.ReadData, while the next files load. It returns the index and
// the files that read well. The index holds the pages alone
// (pageIndex), unless o.ReadData: proving the points' trees looks
// chunks up.
func (r *Repository) checkIndexAndPacks(ctx context.Context, sizes map[ID]int64, res *CheckResult, o CheckOptions, sums *leafSums) (*index, []backend.FileInfo, error) {
	files, _, err := r.indexFiles(ctx)
	if err != nil {
		return nil, nil, err
	}
	x := r.newIndex()
	if !o.ReadData {
		x.only = BlobPage
	}
	var good []backend.FileInfo
	indexed := map[ID]bool{}
	var mu sync.Mutex // res, from the readers
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, f := range files {
		n := f.Name
		packs, err := r.readIndexFile(gctx, n)
		mu.Lock()
		if err != nil {
			res.Errors = append(res.Errors, err)
		} else {
			good = append(good, f)
		}
		mu.Unlock()
		x.add(n, packs)
		for _, p := range packs {
			if indexed[p.ID] {
				continue // the lookup index keeps the first file's entries too
			}
			indexed[p.ID] = true
			if !r.checkPackSize(p, sizes, res, &mu) || !o.ReadData || o.ReadPack != nil && !o.ReadPack(p.ID) {
				continue
			}
			res.PacksRead++
			g.Go(func() error {
				errs, err := r.verifyPack(gctx, p.ID, p.Entries, sums)
				mu.Lock()
				res.Errors = append(res.Errors, errs...)
				mu.Unlock()
				return err
			})
		}
	}
	if err := g.Wait(); err != nil {
		x.close()
		return nil, nil, err
	}
	for id := range sizes {
		if !indexed[id] {
			res.Warnings = append(res.Warnings, fmt.Sprintf("pack %v is in no index file (left by an interrupted backup, or its index file is lost)", id))
		}
	}
	res.Packs = len(indexed)
	return x, good, nil
}

// checkPackSize reports an indexed pack that is missing or too short for
// its entries; it returns whether the pack is there to be read.
func (r *Repository) checkPackSize(p packInfo, sizes map[ID]int64, res *CheckResult, mu *sync.Mutex) bool {
	mu.Lock()
	defer mu.Unlock()
	size, ok := sizes[p.ID]
	if !ok {
		res.errorf("pack %v named by index is missing: %w", p.ID, ErrCorrupt)
		return false
	}
	if end := packDataEnd(p.Entries); end > size {
		res.errorf("pack %v: %d bytes, index says blobs reach %d: %w", p.ID, size, end, ErrCorrupt)
	}
	return true
}

func packDataEnd(entries []packEntry) int64 {
	var end int64
	for _, e := range entries {
		end = max(end, int64(e.Offset)+int64(e.Stored))
	}
	return end
}

// verifyPack returns the damage found in one pack; the error result is for
// failures to check at all. It sums the leaves of each good chunk into
// sums, for the proof of the points' trees (T6).
func (r *Repository) verifyPack(ctx context.Context, id ID, want []packEntry, sums *leafSums) ([]error, error) {
	data, err := backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.Data, Name: id.String()}, 0, 0)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, nil // already reported
	} else if err != nil {
		return nil, err
	}
	entries, err := r.parsePack(id, data)
	if err != nil {
		return []error{err}, nil
	}
	var errs []error
	have := map[blobKey]packEntry{}
	buf := make([]byte, r.maxBlob()) // one for the pack: less for the collector
	for _, e := range entries {
		have[blobKey{e.Type, e.ID}] = e
		plain, err := r.decodeBlobTo(e, id, data[e.Offset:e.Offset+e.Stored], buf)
		if err != nil {
			errs = append(errs, err)
		} else if e.Type == BlobChunk {
			sums.add(e.ID, plain)
		}
	}
	for _, e := range want {
		if got, ok := have[blobKey{e.Type, e.ID}]; !ok || got != e {
			errs = append(errs, fmt.Errorf("pack %v: index entry for %v %v does not match pack header: %w", id, e.Type, e.ID.Short(), ErrCorrupt))
		}
	}
	return errs, nil
}

// checkManifests walks every manifest's page tree. Pages shared between
// manifests are checked once. That every chunk a page holds is indexed
// is checked by a join, not a lookup per slot (a lookup in a spilled run
// reads a block: 3 M chunks took 7 times as long as 1 M): the walk
// gathers the chunks (62 bits of their ID, blobSet), one sweep of the
// index files (or of x, if it holds the chunks) marks those they hold,
// and only if some are left does a second, exact walk name the slots. A
// chunk missing from every index file yet sharing 62 bits with one
// indexed would go unreported: ~n/2⁶² likely for each missing chunk among
// n indexed (2·10⁻¹² at 10 M).
func (r *Repository) checkManifests(ctx context.Context, x *index, files []backend.FileInfo, res *CheckResult, o CheckOptions, sums *leafSums) error {
	names, err := r.listNames(ctx, backend.Manifests)
	if err != nil {
		return err
	}
	var size int64
	for _, f := range files {
		size += f.Size
	}
	refs := newBlobSet(max(x.count(), int(size/indexEntrySize)))
	prover := &treeProver{r: r, x: x, o: o, sums: sums, cache: map[leafKey][]hashtree.Hash{}}
	r.eachCheckedManifest(ctx, x, names, res, func(m *Manifest, _ int, cid ID) { refs.add(BlobChunk, cid) }, func(m *Manifest) { prover.check(ctx, m, res) })
	if err := r.markIndexed(ctx, x, files, refs); err != nil || refs.unindexed() == 0 {
		return err
	}
	full := x
	if x.only != 0 { // read the chunks too, only to name the slots
		if full, err = r.fullIndex(ctx, files); err != nil {
			return err
		}
		defer full.close()
	}
	var exact CheckResult // the manifests' own errors are reported already
	r.eachCheckedManifest(ctx, x, names, &exact, func(m *Manifest, slot int, cid ID) {
		if !full.has(BlobChunk, cid) {
			res.errorf("manifest %v slot %d: chunk %v in no index file: %w (%w)", m.ID.Short(), slot, cid.Short(), ErrIncomplete, ErrCorrupt)
		}
	}, nil)
	return nil
}

// markIndexed marks in refs the chunks x holds, or, if it holds the
// pages alone, the chunks the index files hold.
func (r *Repository) markIndexed(ctx context.Context, x *index, files []backend.FileInfo, refs *blobSet) error {
	if x.only == 0 {
		return x.each(func(e *ientry) {
			if e.typ == BlobChunk {
				refs.indexed(BlobChunk, e.id)
			}
		})
	}
	return r.sweepIndex(ctx, files, func(e *packEntry) {
		if e.Type == BlobChunk {
			refs.indexed(BlobChunk, e.ID)
		}
	})
}

// fullIndex reads the index files into an index of every blob.
func (r *Repository) fullIndex(ctx context.Context, files []backend.FileInfo) (*index, error) {
	x := r.newIndex()
	if err := r.readIndexFiles(ctx, x, files); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

// eachCheckedManifest loads each manifest named and checks its pages,
// calling chunk for every chunk of every page (pages shared between
// manifests once) and then, if not nil, after for the manifest.
func (r *Repository) eachCheckedManifest(ctx context.Context, x *index, names []string, res *CheckResult, chunk func(m *Manifest, slot int, cid ID), after func(*Manifest)) {
	seen := map[ID]bool{}
	for _, n := range names {
		id, err := ParseID(n)
		if err != nil {
			res.errorf("manifest file %q: bad name: %w", n, ErrCorrupt)
			continue
		}
		m, err := r.LoadManifest(ctx, id)
		if err != nil {
			res.Errors = append(res.Errors, err)
			continue
		}
		res.Manifests++
		r.checkManifest(ctx, x, m, seen, res, chunk)
		if after != nil {
			after(m)
		}
	}
}

func (r *Repository) checkManifest(ctx context.Context, x *index, m *Manifest, seen map[ID]bool, res *CheckResult, chunk func(m *Manifest, slot int, cid ID)) {
	for pi, pid := range m.Pages {
		if pid.IsZero() || seen[pid] {
			continue
		}
		seen[pid] = true
		err := r.eachPageSlot(ctx, x, m, uint64(pi), func(b []byte) error {
			return eachPageID(b, m.pageLen(uint64(pi)), func(s int, cid ID) { chunk(m, pi*int(m.PageSlots)+s, cid) })
		})
		if err != nil {
			res.Errors = append(res.Errors, err)
		}
	}
}

// PackGroup selects the n-th of t fixed groups of packs (1 <= n <= t),
// for CheckOptions.ReadPack: checks reading groups 1/t ... t/t in turn
// read every pack once (check --read-data-subset n/t).
func PackGroup(n, t uint64) func(ID) bool {
	return func(id ID) bool {
		v := uint64(id[0])<<24 | uint64(id[1])<<16 | uint64(id[2])<<8 | uint64(id[3])
		return v%t == n-1
	}
}

package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
)

// SnapshotWriter builds one restore point. PutChunk is safe for
// concurrent use; Commit and Abort end the writer.
type SnapshotWriter struct {
	r      *Repository
	meta   Meta
	parent *Manifest
	slots  uint64
	npages uint64
	lock   *Lock
	pk     *packer
	start  time.Time

	mu      sync.Mutex
	pages   map[uint64][]ID // pages loaded or changed
	dirty   map[uint64]bool
	pending map[blobKey]bool // blobs this writer added to packs no index file names yet
	stats   Stats
	err     error // sticky: once set only Abort is allowed
	closed  bool
	packs   uint64        // packs named by this writer's index files
	idxSize uint64        // bytes of those index files
	stored  map[uint64]ID // pages stored early by Done, by page number
	doneTo  uint64        // pages below this one are final (Done)

	tailWritten atomic.Bool // the caller sent the last slot itself
	// parentOK is set once ParentLost walked the parent: the pages with
	// lost slots; others are reused by ID unchecked (checkInherited).
	parentOK map[uint64]bool
	// pageCache holds parent pages (plaintext) ParentLost loaded, until
	// the writer first changes them (pageload.go); under mu.
	pageCache map[uint64][]byte
	verify    func() error // VerifyBeforeIndex's check; under mu

	tree       PointTree // SetTree's, stored by Commit
	treeProven bool
	reopened   map[uint64]bool // pages below doneTo that Reopen made writable; under mu
	ended      sync.Once       // the repository's pack buffers no longer count this writer
}

// indexEvery is how many packs (~1 GiB stored) a writer gathers before it
// writes an index file naming them, so what it keeps in memory about its
// own packs stays bounded however large the backup.
const indexEvery = 64

// NewWriter starts a backup of a disk described by meta. With a parent,
// every slot not written keeps the parent's content (an incremental);
// without one, unwritten slots read as zeros. It takes a shared lock
// held until Commit or Abort.
func (r *Repository) NewWriter(ctx context.Context, parent *Manifest, meta Meta) (*SnapshotWriter, error) {
	if meta.Size == 0 || meta.Size > maxImageSize {
		return nil, fmt.Errorf("repo: new writer: size %d: %w", meta.Size, ErrInvalid)
	}
	if parent != nil && (parent.ChunkSize != r.cfg.ChunkSize || parent.PageSlots != r.cfg.PageSlots) {
		return nil, fmt.Errorf("repo: new writer: parent geometry differs: %w", ErrInvalid)
	}
	lock, err := r.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	if err := r.writerPreflight(ctx, parent); err != nil {
		lock.Unlock(context.WithoutCancel(ctx))
		return nil, err
	}
	m := &Manifest{Meta: meta, ChunkSize: r.cfg.ChunkSize, PageSlots: r.cfg.PageSlots}
	w := &SnapshotWriter{r: r, meta: meta, parent: parent, slots: m.Slots(), lock: lock, start: time.Now(),
		pages: map[uint64][]ID{}, dirty: map[uint64]bool{}, pending: map[blobKey]bool{}, stored: map[uint64]ID{}, reopened: map[uint64]bool{}}
	w.npages = ceilDiv(w.slots, uint64(r.cfg.PageSlots))
	w.pk = &packer{r: r, onUpload: w.afterUpload}
	r.bufs.writerStarted()
	return w, nil
}

// writerPreflight runs under the writer's lock, when Prune cannot run.
// Another process may have pruned since we loaded the index (dedup
// against a stale index would reference deleted blobs), or forgotten and
// pruned the parent (whose pages we would inherit).
func (r *Repository) writerPreflight(ctx context.Context, parent *Manifest) error {
	if parent != nil {
		_, err := r.be.Stat(ctx, backend.Handle{Type: backend.Manifests, Name: parent.ID.String()})
		if err != nil {
			return fmt.Errorf("repo: new writer: parent %v: %w", parent.ID.Short(), translate(err))
		}
	}
	return r.refreshIndex(ctx)
}

// afterUpload keeps the lock fresh and writes an index file once enough
// packs are waiting for one.
func (w *SnapshotWriter) afterUpload(ctx context.Context) error {
	if w.lock.needsRefresh() {
		if err := w.lock.Refresh(ctx); err != nil {
			return err
		}
	}
	return w.writeIndex(ctx, indexEvery)
}

// chunkLen is the length of slot's chunk: ChunkSize except for a short
// last slot.
func (w *SnapshotWriter) chunkLen(slot uint64) int {
	cs := uint64(w.r.cfg.ChunkSize)
	return int(min(cs, w.meta.Size-slot*cs))
}

func (w *SnapshotWriter) pageLen(pi uint64) int {
	return int(min(uint64(w.r.cfg.PageSlots), w.slots-pi*uint64(w.r.cfg.PageSlots)))
}

func (w *SnapshotWriter) usable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("repo: writer: %w", ErrClosed)
	}
	if w.err != nil {
		return fmt.Errorf("repo: writer failed earlier (%w): %w", w.err, ErrClosed)
	}
	return nil
}

func (w *SnapshotWriter) fail(err error) error {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	return err
}

// VerifyBeforeIndex sets a check run before each index file the writer
// writes, once the packs it will name are sealed. A caller whose chunk
// bytes may change while PutChunk uses them (a memory-mapped snapshot)
// makes it fail if they may have, so a blob whose ID does not match its
// content never becomes visible to other writers: the writer fails, and
// Abort removes every pack no index file names.
func (w *SnapshotWriter) VerifyBeforeIndex(check func() error) {
	w.mu.Lock()
	w.verify = check
	w.mu.Unlock()
}

// PutChunk records data as the content of slot. data must be exactly the
// slot's length (ChunkSize, or less for the last slot). All-zero data is
// not stored: the slot is marked zero. Data already in the repository is
// not stored again.
func (w *SnapshotWriter) PutChunk(ctx context.Context, slot uint64, data []byte) error {
	if err := w.usable(); err != nil {
		return err
	}
	return w.put(ctx, slot, data)
}

func (w *SnapshotWriter) put(ctx context.Context, slot uint64, data []byte) error {
	if slot >= w.slots || len(data) != w.chunkLen(slot) {
		return fmt.Errorf("repo: put chunk: slot %d with %d bytes (image has %d slots): %w", slot, len(data), w.slots, ErrInvalid)
	}
	id := zeroID
	if !w.r.isZero(data) {
		id = w.r.crypt.blobID(data)
		if err := w.store(ctx, BlobChunk, id, data); err != nil {
			return w.fail(err)
		}
	}
	if err := w.setSlot(ctx, slot, id); err != nil {
		return w.fail(err)
	}
	if slot == w.slots-1 {
		w.tailWritten.Store(true)
	}
	w.mu.Lock()
	w.stats.Chunks++
	w.stats.BytesRead += uint64(len(data))
	if id.IsZero() {
		w.stats.ZeroChunks++
	}
	w.mu.Unlock()
	return nil
}

func (r *Repository) isZero(data []byte) bool {
	return bytes.Equal(data, r.zeros()[:len(data)])
}

// store adds a blob to a pack unless the repository or this writer
// already has it. The key is claimed before encoding so two goroutines
// with equal data store it once.
func (w *SnapshotWriter) store(ctx context.Context, t BlobType, id ID, data []byte) error {
	k := blobKey{t, id}
	w.mu.Lock()
	if w.pending[k] || w.r.idx.has(t, id) {
		w.mu.Unlock()
		return nil
	}
	w.pending[k] = true
	if t == BlobChunk {
		w.stats.NewChunks++
		w.stats.NewBytes += uint64(len(data))
	} else {
		w.stats.NewPages++
	}
	w.mu.Unlock()
	return w.pk.add(ctx, t, id, data)
}

func (w *SnapshotWriter) setSlot(ctx context.Context, slot uint64, id ID) error {
	ps := uint64(w.r.cfg.PageSlots)
	pg, err := w.page(ctx, slot/ps)
	if err != nil {
		return err
	}
	w.mu.Lock()
	pg[slot%ps] = id
	w.dirty[slot/ps] = true
	w.mu.Unlock()
	return nil
}

// page returns page pi for modification, loading it from the parent on
// first use. Loading happens outside the lock; if two goroutines race,
// the first stored copy wins and the other is dropped unmodified.
func (w *SnapshotWriter) page(ctx context.Context, pi uint64) ([]ID, error) {
	w.mu.Lock()
	pg, ok := w.pages[pi]
	final := pi < w.doneTo && !w.reopened[pi]
	w.mu.Unlock()
	if final {
		return nil, fmt.Errorf("repo: page %d changed after Done: %w", pi, ErrInvalid)
	}
	if ok {
		return pg, nil
	}
	pg, err := w.basePage(ctx, pi)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if existing, ok := w.pages[pi]; ok {
		return existing, nil
	}
	w.pages[pi] = pg
	return pg, nil
}

// Done promises that no PutChunk for a slot below slot follows, so the
// index pages entirely below it are stored now and dropped from memory:
// a writer then holds the pages under its callers' work in progress, not
// 32 bytes for every slot of the disk until Commit. The last page always
// waits for Commit (which may trim it). A PutChunk that breaks the
// promise fails with ErrInvalid.
func (w *SnapshotWriter) Done(ctx context.Context, slot uint64) error {
	if err := w.usable(); err != nil {
		return err
	}
	w.mu.Lock()
	from, to := w.doneTo, min(slot/uint64(w.r.cfg.PageSlots), w.npages-1)
	var todo []uint64
	for pi := from; pi < to; pi++ {
		if w.dirty[pi] {
			todo = append(todo, pi)
		}
	}
	w.doneTo = max(from, to)
	w.mu.Unlock()
	for _, pi := range todo {
		w.mu.Lock()
		pg := w.pages[pi]
		w.mu.Unlock()
		id, err := w.storePage(ctx, pi, pg)
		if err != nil {
			return w.fail(err)
		}
		w.mu.Lock()
		w.stored[pi] = id
		delete(w.pages, pi)
		delete(w.dirty, pi)
		w.mu.Unlock()
	}
	return nil
}

// baseZero reports whether page pi as inherited from the parent reads as
// zeros throughout: no parent, past the parent's end, or its zero page.
func (w *SnapshotWriter) baseZero(pi uint64) bool {
	p := w.parent
	return p == nil || pi >= uint64(len(p.Pages)) || p.Pages[pi].IsZero()
}

// basePage is page pi as inherited from the parent, resized to this
// image's geometry: slots past the parent's end read as zeros.
func (w *SnapshotWriter) basePage(ctx context.Context, pi uint64) ([]ID, error) {
	pg := make([]ID, w.pageLen(pi))
	p := w.parent
	if w.baseZero(pi) {
		return pg, nil
	}
	if !w.r.idx.has(BlobPage, p.Pages[pi]) { // lost with its pack: every slot
		for s := range min(len(pg), p.pageLen(pi)) {
			pg[s] = lostID
		}
		return pg, nil
	}
	if b, ok := w.cachedPage(pi); ok && p.pageLen(pi) <= len(pg) {
		if err := decodePageInto(b, pg[:p.pageLen(pi)]); err != nil {
			return nil, fmt.Errorf("repo: manifest %v page %d: %w", p.ID.Short(), pi, err)
		}
	} else if n := p.pageLen(pi); n <= len(pg) {
		// The common case: decode straight into the page (slots past the
		// parent's end stay zero).
		if err := w.r.loadPageInto(ctx, w.r.idx, p, pi, pg[:n]); err != nil {
			return nil, err
		}
	} else {
		old, err := w.r.loadPage(ctx, w.r.idx, p, pi)
		if err != nil {
			return nil, err
		}
		copy(pg, old)
	}
	w.markLost(pg)
	return pg, nil
}

// loadPage reads page pi of m.
func (r *Repository) loadPage(ctx context.Context, x *index, m *Manifest, pi uint64) ([]ID, error) {
	pg := make([]ID, m.pageLen(pi))
	return pg, r.loadPageInto(ctx, x, m, pi, pg)
}

// loadPageInto reads page pi of m into dst, which holds exactly its slots,
// all zero IDs (decodePageInto).
func (r *Repository) loadPageInto(ctx context.Context, x *index, m *Manifest, pi uint64, dst []ID) error {
	if m.Pages[pi].IsZero() {
		clear(dst)
		return nil
	}
	return r.eachPageSlot(ctx, x, m, pi, func(b []byte) error { return decodePageInto(b, dst) })
}

// eachPageSlot loads page pi of m (not the zero page) and hands its
// encoded form to decode, wrapping errors with the manifest and page.
func (r *Repository) eachPageSlot(ctx context.Context, x *index, m *Manifest, pi uint64, decode func([]byte) error) error {
	data, err := r.loadBlobFrom(ctx, x, BlobPage, m.Pages[pi])
	if err == nil {
		err = decode(data)
	}
	if err != nil {
		return fmt.Errorf("repo: manifest %v page %d: %w", m.ID.Short(), pi, err)
	}
	return nil
}

// Commit writes the restore point. Order: remaining packs (chunks and
// pages) → index file → manifest (docs/repository.md, write ordering,
// invariants 1–3: the manifest's existence is the commit). A crash at any point before the
// manifest leaves no restore point, only data that Prune removes.
func (w *SnapshotWriter) Commit(ctx context.Context) (*Manifest, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	m, err := w.commit(ctx)
	if err != nil {
		return nil, errors.Join(err, w.cleanup(context.WithoutCancel(ctx)))
	}
	// The backup is committed whatever happens to the lock: a lock file
	// that cannot be removed only delays a prune until it expires.
	_ = w.lock.Unlock(context.WithoutCancel(ctx))
	w.end()
	return m, nil
}

func (w *SnapshotWriter) commit(ctx context.Context) (*Manifest, error) {
	m := &Manifest{Meta: w.meta, ChunkSize: w.r.cfg.ChunkSize, PageSlots: w.r.cfg.PageSlots}
	if w.parent != nil {
		pid := w.parent.ID
		m.Parent = &pid
	}
	if err := w.trimTail(ctx); err != nil {
		return nil, err
	}
	var err error
	if m.Pages, err = w.writePages(ctx); err != nil {
		return nil, err
	}
	if m.Tree, err = w.writeTree(ctx); err != nil {
		return nil, err
	}
	if err := w.pk.flush(ctx); err != nil {
		return nil, err
	}
	if err := w.writeIndex(ctx, 1); err != nil {
		return nil, err
	}
	w.mu.Lock()
	m.Stats = w.stats
	m.Stats.PacksWritten = w.packs
	m.Stats.StoredBytes = w.pk.stored + w.idxSize
	w.mu.Unlock()
	m.Stats.Duration = time.Since(w.start)
	data, err := encodeManifest(w.r.crypt, m)
	if err != nil {
		return nil, err
	}
	if m.ID, err = w.r.saveFile(ctx, backend.Manifests, data); err != nil {
		return nil, w.rollbackManifest(ctx, m.ID, err)
	}
	m.Stats.StoredBytes += uint64(len(data))
	return m, nil
}

// rollbackManifest makes a failed manifest save unambiguous: the save may
// have taken effect before the error (a lost acknowledgement), so remove
// it. Only if that also fails is the outcome unknown, and the error says so.
func (w *SnapshotWriter) rollbackManifest(ctx context.Context, id ID, saveErr error) error {
	err := w.r.be.Remove(context.WithoutCancel(ctx), backend.Handle{Type: backend.Manifests, Name: id.String()})
	if err == nil || errors.Is(err, backend.ErrNotFound) {
		return saveErr
	}
	return fmt.Errorf("repo: commit outcome unknown, manifest %v may exist: %w", id.Short(), errors.Join(saveErr, err))
}

// trimTail keeps the invariant that no chunk is longer than its slot.
// After a shrink, the new last slot may inherit a chunk longer than the
// slot; if the disk later grew again, the bytes past the old end would
// reappear instead of zeros. So such a chunk is stored again, truncated.
func (w *SnapshotWriter) trimTail(ctx context.Context) error {
	last := w.slots - 1
	n := w.chunkLen(last)
	if w.parent == nil || w.meta.Size >= w.parent.Size || n == int(w.r.cfg.ChunkSize) || w.tailWritten.Load() {
		return nil
	}
	ps := uint64(w.r.cfg.PageSlots)
	pg, err := w.page(ctx, last/ps)
	if err != nil || pg[last%ps].IsZero() || pg[last%ps] == lostID { // lost: storePage reports it
		return err
	}
	data, err := w.r.loadBlobFrom(ctx, w.r.idx, BlobChunk, pg[last%ps])
	if err != nil || len(data) <= n {
		return err
	}
	return w.put(ctx, last, data[:n])
}

// writePages stores every changed page and returns the root list. A page
// not touched keeps the parent's ID unless the geometry changed under it.
func (w *SnapshotWriter) writePages(ctx context.Context) ([]ID, error) {
	roots := make([]ID, w.npages)
	for pi := range w.npages {
		if id, ok := w.stored[pi]; ok {
			roots[pi] = id
			continue
		}
		p := w.parent
		reuse := p != nil && pi < uint64(len(p.Pages)) && p.pageLen(pi) == w.pageLen(pi) &&
			(p.Pages[pi].IsZero() || w.r.idx.has(BlobPage, p.Pages[pi]))
		if !w.dirty[pi] && reuse {
			if err := w.checkInherited(ctx, pi); err != nil {
				return nil, err
			}
			roots[pi] = p.Pages[pi]
			continue
		}
		pg, ok := w.pages[pi] // no PutChunk runs any more: no lock needed
		if !ok && w.baseZero(pi) {
			// Untouched and empty in the parent (or no parent): the zero
			// page, without building and scanning PageSlots IDs for it. A
			// 2 TiB thin disk has 8192 such pages (1 GiB of IDs to zero
			// and scan), which made its full backup cost 2x a small disk's.
			continue // roots[pi] is already zeroID
		}
		if !ok {
			var err error
			if pg, err = w.basePage(ctx, pi); err != nil {
				return nil, err
			}
		}
		var err error
		if roots[pi], err = w.storePage(ctx, pi, pg); err != nil {
			return nil, err
		}
	}
	return roots, nil
}

// storePage stores a page; an all-zero page gets the zero ID and no blob,
// so a large empty disk costs almost nothing.
func (w *SnapshotWriter) storePage(ctx context.Context, pi uint64, pg []ID) (ID, error) {
	if err := checkPage(pi, w.r.cfg.PageSlots, pg); err != nil {
		return zeroID, err
	}
	if !slices.ContainsFunc(pg, func(id ID) bool { return !id.IsZero() }) {
		return zeroID, nil
	}
	enc := encodePage(pg)
	id := w.r.crypt.blobID(enc)
	return id, w.store(ctx, BlobPage, id, enc)
}

// writeIndex writes an index file naming the packs uploaded since the
// last one, if there are at least min (invariant 2 of docs/repository.md's
// write ordering: only sealed, durable, verified packs are named); from then on those packs are never removed by Abort (another
// writer may already dedup against them; Prune removes them if no
// restore point comes to use them), and their blobs are found through
// the repository's index instead of pending.
func (w *SnapshotWriter) writeIndex(ctx context.Context, min int) error {
	w.mu.Lock()
	verify := w.verify
	w.mu.Unlock()
	packs, err := w.pk.takeDone(min, verify)
	if err != nil {
		return fmt.Errorf("repo: before writing an index file: %w", err)
	}
	if len(packs) == 0 {
		return nil
	}
	data := sealEnvelope(w.r.crypt, indexMagic, encodeIndex(packs))
	id, err := w.r.saveFile(ctx, backend.Index, data)
	if err != nil {
		return err
	}
	w.r.idx.add(id.String(), packs)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range packs {
		for _, e := range p.Entries {
			delete(w.pending, blobKey{e.Type, e.ID})
		}
	}
	w.packs += uint64(len(packs))
	w.idxSize += uint64(len(data))
	return nil
}

// Abort ends the writer without a restore point and removes the packs it
// wrote that no index file may name (Prune removes the others).
func (w *SnapshotWriter) Abort(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("repo: abort: %w", ErrClosed)
	}
	w.closed = true
	w.mu.Unlock()
	return w.cleanup(ctx)
}

func (w *SnapshotWriter) cleanup(ctx context.Context) error {
	defer w.end()
	return errors.Join(w.pk.removeAll(ctx), w.lock.Unlock(ctx))
}

// end tells the repository's pack buffers this writer is done.
func (w *SnapshotWriter) end() { w.ended.Do(w.r.bufs.writerEnded) }

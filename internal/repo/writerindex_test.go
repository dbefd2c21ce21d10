package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// smallPacks makes every 64 KiB chunk a pack of its own, so a few MiB of
// image is more than indexEvery packs.
func smallPacks() Options { return Options{PackSize: 4 << 10, PageSlots: 256, KDF: testKDF} }

// indexedPacks returns the packs the index files name, and how many files.
func indexedPacks(t *testing.T, r *Repository) (map[ID]bool, int) {
	t.Helper()
	x, err := r.readIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	packs, files, err := x.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	named := map[ID]bool{}
	for id := range packs {
		named[id] = true
	}
	return named, len(files)
}

// A large backup writes an index file every indexEvery packs instead of
// one at the end, and its restore point still restores whole.
func TestWriterIndexesAsItGoes(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallPacks())
	img := repotest.Image(rand.New(rand.NewPCG(21, 21)), 3*indexEvery<<16, 64<<10, 0.1)
	m := backup(t, r, nil, img, nil)
	repotest.Verify(t, r.OpenImage, m.ID, img)
	named, files := indexedPacks(t, r)
	stored := count(t, be, backend.Data)
	if files < 3 || len(named) != stored || m.Stats.PacksWritten != uint64(stored) {
		t.Fatalf("%d index files naming %d packs; %d packs stored, %d counted", files, len(named), stored, m.Stats.PacksWritten)
	}
	r2, err := Open(context.Background(), be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	repotest.Verify(t, r2.OpenImage, m.ID, img)
	repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
}

// Abort after index files were written keeps the packs they name (another
// writer may already use them) and removes the others; Prune then
// removes the rest, and check is clean at every step.
func TestAbortAfterIndexFile(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallPacks())
	ctx := context.Background()
	n := uint64(indexEvery + indexEvery/2)
	img := repotest.Image(rand.New(rand.NewPCG(22, 22)), int(n)<<16, 64<<10, 0)
	w, err := r.NewWriter(ctx, nil, Meta{Disk: "d", Size: n << 16})
	if err != nil {
		t.Fatal(err)
	}
	for s := range n {
		if err := w.PutChunk(ctx, s, img[s<<16:(s+1)<<16]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	named, files := indexedPacks(t, r)
	if files == 0 || len(named) < indexEvery {
		t.Fatalf("test needs an index file written mid-backup: %d files, %d packs", files, len(named))
	}
	if stored := count(t, be, backend.Data); stored != len(named) {
		t.Fatalf("after abort %d packs stored, %d named by index files: want exactly the named ones", stored, len(named))
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	if _, err := r.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []backend.FileType{backend.Data, backend.Index, backend.Locks} {
		if c := count(t, be, typ); c != 0 {
			t.Errorf("%d %s objects left after prune", c, typ)
		}
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
}

// Done stores the pages below the promised slot and drops them, so a
// writer going through the disk in order holds a couple of pages however
// large the disk; the restore point is the same as without Done, for a
// full backup and for an incremental; a PutChunk below Done is refused.
func TestWriterDone(t *testing.T) {
	ctx := context.Background()
	r := initRepo(t, mem.New(), Options{ChunkSize: 4 << 10, PageSlots: 64, PackSize: 1 << 20, KDF: testKDF})
	rng := rand.New(rand.NewPCG(23, 23))
	img := repotest.Image(rng, 16<<20, 4<<10, 0.3) // 4096 slots, 64 pages
	var parent *Manifest
	var changed map[uint64]bool // nil: write every slot
	for gen := range 2 {
		w, err := r.NewWriter(ctx, parent, Meta{Disk: "d", Size: uint64(len(img))})
		if err != nil {
			t.Fatal(err)
		}
		peak := 0
		for s := range uint64(len(img) >> 12) {
			if changed != nil && !changed[s] {
				continue // the incremental writes the changed slots only
			}
			if err := w.PutChunk(ctx, s, img[s<<12:(s+1)<<12]); err != nil {
				t.Fatal(err)
			}
			if err := w.Done(ctx, s+1); err != nil {
				t.Fatal(err)
			}
			w.mu.Lock()
			peak = max(peak, len(w.pages))
			w.mu.Unlock()
		}
		if peak > 2 {
			t.Errorf("generation %d: %d pages in memory at once, want <= 2 of 64", gen, peak)
		}
		m, err := w.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		repotest.Verify(t, r.OpenImage, m.ID, img)
		parent, changed = m, map[uint64]bool{}
		for _, b := range repotest.Mutate(rng, img, 4<<10, 0.2) {
			changed[uint64(b)] = true
		}
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})

	w, err := r.NewWriter(ctx, parent, Meta{Disk: "d", Size: uint64(len(img))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(ctx)
	if err := w.Done(ctx, 200); err != nil {
		t.Fatal(err)
	}
	if err := w.PutChunk(ctx, 70, img[70<<12:71<<12]); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutChunk below Done: %v, want ErrInvalid", err)
	}
}

// An Image keeps at most imagePages index pages, however many it reads.
func TestImagePagesBounded(t *testing.T) {
	r := initRepo(t, mem.New(), Options{ChunkSize: 4 << 10, PageSlots: 8, PackSize: 1 << 20, KDF: testKDF})
	img := repotest.Image(rand.New(rand.NewPCG(24, 24)), 8<<20, 4<<10, 0.2) // 256 pages
	m := backup(t, r, nil, img, nil)
	im, err := r.OpenImage(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(img) {
		t.Fatal("image differs")
	}
	if n := len(im.pages); n > imagePages || n == 0 {
		t.Fatalf("%d pages kept, want 1..%d", n, imagePages)
	}
}

// countLoads counts the loads of files of type t through the returned
// backend.
func countLoads(be backend.Backend, t backend.FileType) (backend.Backend, *atomic.Int64) {
	n := new(atomic.Int64)
	return onLoad{be, func(h backend.Handle) {
		if h.Type == t {
			n.Add(1)
		}
	}}, n
}

// onLoad calls fn before every Load.
type onLoad struct {
	backend.Backend
	fn func(backend.Handle)
}

func (o onLoad) Load(ctx context.Context, h backend.Handle, off, n int64) (io.ReadCloser, error) {
	o.fn(h)
	return o.Backend.Load(ctx, h, off, n)
}

// A new writer reads only the index files it has not seen: none when
// nothing changed (it used to read them all again, building a second
// index it threw away), the new one after another process's backup.
func TestNewWriterReadsOnlyNewIndexFiles(t *testing.T) {
	ctx := context.Background()
	store := mem.New()
	r := initRepo(t, store, testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(25, 25)), 4<<20, 64<<10, 0)
	backup(t, r, nil, img, nil)
	count, loads := countLoads(store, backend.Index)
	r1, err := Open(ctx, count, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{0, 1} {
		if want == 1 {
			backup(t, r, nil, repotest.Image(rand.New(rand.NewPCG(26, 26)), 1<<20, 64<<10, 0), nil)
		}
		loads.Store(0)
		w, err := r1.NewWriter(ctx, nil, Meta{Disk: "d", Size: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		w.Abort(ctx)
		if got := loads.Load(); got != want {
			t.Errorf("NewWriter loaded %d index files, want %d", got, want)
		}
	}
}

// phantomIndex lists one index file that is not there, the first
// `times` listings: as if a prune in another process had replaced it
// between the listing and the load.
type phantomIndex struct {
	backend.Backend
	times *atomic.Int64
}

func (p phantomIndex) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.Index && p.times.Add(-1) >= 0 {
		if err := fn(backend.FileInfo{Name: ID{1}.String(), Size: 100}); err != nil {
			return err
		}
	}
	return p.Backend.List(ctx, t, fn)
}

// Opening reads the index again when an index file vanishes under it,
// and gives up with ErrNotFound if that keeps happening.
func TestOpenIndexFileVanished(t *testing.T) {
	ctx := context.Background()
	store := mem.New()
	r := initRepo(t, store, testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(27, 27)), 1<<20, 64<<10, 0)
	m := backup(t, r, nil, img, nil)
	var times atomic.Int64
	times.Store(2)
	r2, err := Open(ctx, phantomIndex{store, &times}, testPassword, testSettings())
	if err != nil {
		t.Fatalf("open with an index file vanishing twice: %v", err)
	}
	repotest.Verify(t, r2.OpenImage, m.ID, img)
	times.Store(100)
	if _, err := Open(ctx, phantomIndex{store, &times}, testPassword, testSettings()); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("open with an index file always vanishing: %v, want ErrNotFound", err)
	}
}

// KeepFresh keeps a lock alive past its TTL (an exclusive lock stays
// refused), and its release unlocks.
func TestLockKeepFresh(t *testing.T) {
	ctx := context.Background()
	opts := testOptions()
	opts.LockTTL = 400 * time.Millisecond // refreshed every 100 ms
	r := initRepo(t, mem.New(), opts)
	l, err := r.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	release := l.KeepFresh(ctx)
	for range 10 { // 2.5 TTLs
		time.Sleep(100 * time.Millisecond)
		if x, err := r.Lock(ctx, true); !errors.Is(err, ErrLocked) {
			if err == nil {
				x.Unlock(ctx)
			}
			t.Fatalf("exclusive lock beside a kept-fresh shared one: %v, want ErrLocked", err)
		}
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	x, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatalf("exclusive lock after release: %v", err)
	}
	x.Unlock(ctx)
}

// Check takes a shared lock: refused beside a prune's exclusive one, and
// none left behind.
func TestCheckLocks(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := initRepo(t, be, testOptions())
	l, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check(ctx, CheckOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("check beside an exclusive lock: %v, want ErrLocked", err)
	}
	l.Unlock(ctx)
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	if n := count(t, be, backend.Locks); n != 0 {
		t.Errorf("%d lock files left by check", n)
	}
}

// Heads come from the cache once cached: no manifest is loaded again;
// a forgotten point's head goes, and a damaged cache entry is reloaded.
func TestHeadsCache(t *testing.T) {
	ctx := context.Background()
	cache := testSettings()
	cache.CacheDir = t.TempDir()
	store := mem.New()
	opts := testOptions()
	opts.CacheDir = cache.CacheDir
	r := initRepo(t, store, opts)
	rng := rand.New(rand.NewPCG(28, 28))
	var ms []*Manifest
	for range 3 {
		ms = append(ms, backup(t, r, nil, repotest.Image(rng, 1<<20, 64<<10, 0), nil))
	}
	count, loads := countLoads(store, backend.Manifests)
	r2, err := Open(ctx, count, testPassword, cache)
	if err != nil {
		t.Fatal(err)
	}
	heads := func(wantLoads int64) map[ID]Head {
		t.Helper()
		loads.Store(0)
		hs, err := r2.Heads(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := loads.Load(); got != wantLoads {
			t.Fatalf("Heads loaded %d manifests, want %d", got, wantLoads)
		}
		byID := map[ID]Head{}
		for _, h := range hs {
			byID[h.ID] = h
		}
		return byID
	}
	heads(3) // fills the cache
	got := heads(0)
	for _, m := range ms {
		if h, ok := got[m.ID]; !ok || h.Disk != m.Disk || !h.Time.Equal(m.Time) || h.ChangeID != m.ChangeID {
			t.Fatalf("head of %v: %+v, manifest %+v", m.ID.Short(), h, m.Meta)
		}
	}
	if err := r.Forget(ctx, ms[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := heads(0); len(got) != 2 {
		t.Fatalf("%d heads after forget, want 2", len(got))
	}
	dir := r2.headsDir()
	if _, err := os.Stat(filepath.Join(dir, ms[0].ID.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("forgotten point's head still cached: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ms[1].ID.String()), []byte("garbage"), 0o600)
	if got := heads(1); got[ms[1].ID].Disk != ms[1].Disk {
		t.Fatalf("damaged head not reloaded: %+v", got[ms[1].ID])
	}
}

// A failing VerifyBeforeIndex check stops the index file that would
// have named the packs sealed so far: the writer fails, and after Abort
// the repository holds no pack and no index file.
func TestVerifyBeforeIndex(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallPacks())
	ctx := context.Background()
	n := uint64(indexEvery + 1)
	img := repotest.Image(rand.New(rand.NewPCG(23, 23)), int(n)<<16, 64<<10, 0)
	w, err := r.NewWriter(ctx, nil, Meta{Disk: "d", Size: n << 16})
	if err != nil {
		t.Fatal(err)
	}
	changed := errors.New("source changed")
	calls := 0
	w.VerifyBeforeIndex(func() error { calls++; return changed })
	var putErr error
	for s := range n {
		if putErr = w.PutChunk(ctx, s, img[s<<16:(s+1)<<16]); putErr != nil {
			break
		}
	}
	if !errors.Is(putErr, changed) || calls == 0 {
		t.Fatalf("put with a failing check: %v after %d checks", putErr, calls)
	}
	if err := w.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if packs, idx := count(t, be, backend.Data), count(t, be, backend.Index); packs != 0 || idx != 0 {
		t.Fatalf("after abort: %d packs, %d index files", packs, idx)
	}
}

// TestWriterIndexFileEntries: chunks that compress to a few bytes fill
// fewer than indexEvery packs with far more than indexFileEntries blobs;
// the writer still names them in index files of about indexFileEntries
// (a repository of such chunks had 57 MB index files, each held whole by
// every process opening it), and the point restores.
func TestWriterIndexFileEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 40k chunks")
	}
	ctx := context.Background()
	be := mem.New()
	// 64 KiB packs of ~60-byte blobs: ~1,000 blobs each, ~40 packs.
	r := initRepo(t, be, Options{ChunkSize: 4 << 10, PackSize: 64 << 10, PageSlots: 4096, KDF: testKDF})
	const slots = 40 << 10
	m := stampedBackup(t, r, nil, slots, 1, slots)
	files := 0
	err := be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		files++
		packs, err := r.readIndexFile(ctx, fi.Name)
		if err != nil {
			return err
		}
		n, last := 0, 0
		for _, p := range packs {
			n, last = n+len(p.Entries), len(p.Entries)
		}
		if n-last >= indexFileEntries { // the file was full before its last pack
			t.Errorf("index file of %d entries in %d packs, want fewer than %d before its last pack", n, len(packs), indexFileEntries)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Errorf("%d index files for %d blobs, want at least 2", files, slots)
	}
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4<<10)
	for _, s := range []int{0, slots / 2, slots - 1} {
		if _, err := im.ReadAt(got, int64(s)<<12); err != nil || !bytes.Equal(got, stamped(1, s)) {
			t.Fatalf("slot %d: %v", s, err)
		}
	}
}

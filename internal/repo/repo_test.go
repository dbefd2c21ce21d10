package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

func slotsOf(blocks []int) []uint64 {
	out := make([]uint64, len(blocks))
	for i, b := range blocks {
		out[i] = uint64(b)
	}
	slices.Sort(out)
	return out
}

// TestFullAndIncremental is the core round trip: a random image with zero
// regions, an incremental after 1% of its 64 KiB blocks changed, both
// read back byte-identical, and the incremental's cost bounded.
func TestFullAndIncremental(t *testing.T) {
	tests := []struct {
		name string
		size int
		opts func(*Options)
	}{
		{"encrypted", 64 << 20, func(*Options) {}},
		{"unencrypted", 16 << 20, func(o *Options) { o.Unencrypted = true }},
		{"no-compression", 16 << 20, func(o *Options) { o.Compression = CompressionNone }},
		{"zstd-default", 16 << 20, func(o *Options) { o.Compression = CompressionDefault }},
		{"max", 16 << 20, func(o *Options) { o.Compression = CompressionMax }},
		{"lz4", 16 << 20, func(o *Options) { o.Compression = CompressionLZ4 }},
		{"off", 16 << 20, func(o *Options) { o.Compression = CompressionOff }},
		{"odd-size", 16<<20 + 12345, func(*Options) {}},
		{"one-page", 8 << 20, func(o *Options) { o.PageSlots = 4096 }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions()
			tc.opts(&opts)
			r := initRepo(t, mem.New(), opts)
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			img := repotest.Image(rng, tc.size, 64<<10, 0.3)
			full := backup(t, r, nil, img, nil)
			old := slices.Clone(img)

			changed := repotest.Mutate(rng, img, 64<<10, 0.01)
			inc := backup(t, r, full, img, slotsOf(changed))
			changedBytes := uint64(len(changed)) * 64 << 10
			if inc.Stats.StoredBytes > changedBytes*3/2 {
				t.Errorf("incremental stored %d bytes for %d changed (> 1.5x)", inc.Stats.StoredBytes, changedBytes)
			}
			if inc.Parent == nil || *inc.Parent != full.ID {
				t.Errorf("parent not recorded")
			}
			repotest.Verify(t, r.OpenImage, full.ID, old)
			repotest.Verify(t, r.OpenImage, inc.ID, img)
			repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
			if full.Stats.ZeroChunks == 0 {
				t.Errorf("no zero chunks detected")
			}
		})
	}
}

// TestReopen checks that a second process sees the same data: index and
// manifests come from the backend, not memory.
func TestReopen(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(7, 7)), 4<<20, 64<<10, 0.2)
	m := backup(t, r, nil, img, nil)
	r2, err := Open(context.Background(), be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	repotest.Verify(t, r2.OpenImage, m.ID, img)
	ms, err := r2.ListManifests(context.Background())
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID || ms[0].Disk != "disk0" {
		t.Fatalf("list: %v %v", ms, err)
	}
	// Identical data again: nothing new but pages' and index bookkeeping.
	m2 := backup(t, r2, nil, img, nil)
	if m2.Stats.NewChunks != 0 {
		t.Errorf("dedup failed: %d new chunks", m2.Stats.NewChunks)
	}
}

func TestWrongPassword(t *testing.T) {
	be := mem.New()
	initRepo(t, be, testOptions())
	if _, err := Open(context.Background(), be, "wrong", testSettings()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("want ErrWrongPassword, got %v", err)
	}
	if _, err := Open(context.Background(), be, testPassword, testSettings()); err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	if ot := r.OpenTimes(); ot.Unlock <= 0 || ot.Index <= 0 {
		t.Errorf("OpenTimes %+v: want the unlock and the index load timed", ot)
	}
	if err := r.AddKey(context.Background(), Secret{Password: "second"}, testKDF); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), be, "second", testSettings()); err != nil {
		t.Fatalf("added password: %v", err)
	}
	if _, err := Init(context.Background(), be, testPassword, testOptions()); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	if _, err := Open(context.Background(), mem.New(), testPassword, testSettings()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open empty: %v", err)
	}
}

func firstPack(t *testing.T, be backend.Backend) backend.Handle {
	// The largest pack holds chunks; a small one may hold only pages.
	var h backend.Handle
	var size int64
	be.List(context.Background(), backend.Data, func(fi backend.FileInfo) error {
		if fi.Size > size {
			h, size = backend.Handle{Type: backend.Data, Name: fi.Name}, fi.Size
		}
		return nil
	})
	if h.Name == "" {
		t.Fatal("no packs")
	}
	return h
}

func TestCorruptPack(t *testing.T) {
	for _, unenc := range []bool{false, true} {
		t.Run(fmt.Sprint("unencrypted=", unenc), func(t *testing.T) {
			be := mem.New()
			opts := testOptions()
			opts.Unencrypted = unenc
			r := initRepo(t, be, opts)
			img := repotest.Image(rand.New(rand.NewPCG(3, 3)), 4<<20, 64<<10, 0)
			m := backup(t, r, nil, img, nil)
			h := firstPack(t, be)
			be.Corrupt(h, 100) // inside the first blob
			allowDamage(t)
			im, err := r.OpenImage(context.Background(), m.ID)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(img))
			_, err = im.ReadAt(buf, 0)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: want ErrCorrupt, got %v", err)
			}
			if !strings.Contains(err.Error(), h.Name) {
				t.Errorf("error does not name pack %s: %v", h.Name, err)
			}
			if _, err := r.Check(context.Background(), CheckOptions{}); err != nil {
				t.Errorf("metadata check should pass: %v", err)
			}
			if _, err := r.Check(context.Background(), CheckOptions{ReadData: true}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("check: want ErrCorrupt, got %v", err)
			}
			// A subset finds the damage only if it reads the damaged pack.
			for _, bad := range []bool{false, true} {
				sel := func(id ID) bool { return (id.String() == h.Name) == bad }
				res, err := r.Check(context.Background(), CheckOptions{ReadData: true, ReadPack: sel})
				if errors.Is(err, ErrCorrupt) != bad || res.PacksRead == 0 || res.PacksRead == res.Packs && !bad {
					t.Fatalf("check of a subset (damaged pack in it: %v): %d of %d packs read: %v", bad, res.PacksRead, res.Packs, err)
				}
			}
		})
	}
}

func count(t *testing.T, be backend.Backend, typ backend.FileType) int {
	n := 0
	if err := be.List(context.Background(), typ, func(backend.FileInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAbort(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, testOptions())
	ctx := context.Background()
	w, err := r.NewWriter(ctx, nil, Meta{Disk: "d", Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img := repotest.Image(rand.New(rand.NewPCG(4, 4)), 8<<20, 64<<10, 0)
	for s := range uint64(100) { // > 1 MiB pack size: packs get uploaded
		if err := w.PutChunk(ctx, s, img[s<<16:(s+1)<<16]); err != nil {
			t.Fatal(err)
		}
	}
	if count(t, be, backend.Data) == 0 {
		t.Fatal("test needs uploaded packs")
	}
	if err := w.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.PutChunk(ctx, 0, img[:64<<10]); !errors.Is(err, ErrClosed) {
		t.Errorf("put after abort: %v", err)
	}
	for _, typ := range []backend.FileType{backend.Manifests, backend.Data, backend.Index, backend.Locks} {
		if n := count(t, be, typ); n != 0 {
			t.Errorf("%d %s objects left after abort", n, typ)
		}
	}
	if res := repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true}); len(res.Warnings) != 0 {
		t.Errorf("warnings: %v", res.Warnings)
	}
}

func TestPutChunkValidation(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	ctx := context.Background()
	w, err := r.NewWriter(ctx, nil, Meta{Size: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(ctx)
	for _, c := range []struct {
		slot uint64
		n    int
	}{{2, 64 << 10}, {0, 100}, {1, 64 << 10}} {
		if err := w.PutChunk(ctx, c.slot, make([]byte, c.n)); !errors.Is(err, ErrInvalid) {
			t.Errorf("slot %d len %d: %v", c.slot, c.n, err)
		}
	}
	if err := w.PutChunk(ctx, 1, make([]byte, 36<<10)); err != nil {
		t.Errorf("short last slot: %v", err)
	}
}

func TestPrune(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, testOptions())
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 5))
	imgA := repotest.Image(rng, 4<<20, 64<<10, 0)
	imgB := repotest.Image(rng, 4<<20, 64<<10, 0.1)
	a := backup(t, r, nil, imgA, nil)
	b := backup(t, r, nil, imgB, nil)
	oldB := slices.Clone(imgB)
	changed := repotest.Mutate(rng, imgB, 64<<10, 0.1)
	c := backup(t, r, b, imgB, slotsOf(changed))

	if err := r.Forget(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	st, err := r.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRemoved == 0 || st.BytesRemoved < 4<<20 {
		t.Errorf("prune removed %+v, want A's ~4 MiB", st)
	}
	if _, err := r.OpenImage(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("forgotten image opens: %v", err)
	}
	repotest.Verify(t, r.OpenImage, b.ID, oldB)
	repotest.Verify(t, r.OpenImage, c.ID, imgB)
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})

	// Forgetting the parent must leave the child whole.
	if err := r.Forget(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	repotest.Verify(t, r2.OpenImage, c.ID, imgB)
	if res := repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true}); len(res.Warnings) != 0 {
		t.Errorf("warnings after prune: %v", res.Warnings)
	}
}

func TestLocks(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	ctx := context.Background()
	w, err := r.NewWriter(ctx, nil, Meta{Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx); !errors.Is(err, ErrLocked) {
		t.Fatalf("prune during backup: %v", err)
	}
	w2, err := r.NewWriter(ctx, nil, Meta{Size: 1 << 20})
	if err != nil {
		t.Fatalf("shared locks must coexist: %v", err)
	}
	w2.Abort(ctx)
	w.Abort(ctx)
	l, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewWriter(ctx, nil, Meta{Size: 1 << 20}); !errors.Is(err, ErrLocked) {
		t.Fatalf("backup during exclusive lock: %v", err)
	}
	l.Unlock(ctx)
	// An expired lock is ignored: a crashed holder must not block forever.
	crashed := reopen(t, r, Options{LockTTL: -1}) // its locks are stale at once
	l2, err := crashed.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	l3, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatalf("expired lock not ignored: %v", err)
	}
	l3.Unlock(ctx)
	l2.Unlock(ctx)
}

func TestSizeChange(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	rng := rand.New(rand.NewPCG(6, 6))
	img := repotest.Image(rng, 20<<20+5000, 64<<10, 0)
	m := backup(t, r, nil, img, nil)
	// Grow: the old short last chunk is inherited and the rest reads zero.
	grown := append(slices.Clone(img), make([]byte, 3<<20)...)
	g := backup(t, r, m, grown, []uint64{0})
	repotest.Verify(t, r.OpenImage, g.ID, grown)
	// Shrink across a page boundary.
	shrunk := slices.Clone(img[:5<<20+17])
	s := backup(t, r, m, shrunk, []uint64{1})
	repotest.Verify(t, r.OpenImage, s.ID, shrunk)
	// Grow again without sending anything: the old bytes past the shrink
	// point must not come back; the grown region reads as zeros.
	regrown := append(slices.Clone(shrunk), make([]byte, 2<<20)...)
	g2 := backup(t, r, s, regrown, []uint64{})
	repotest.Verify(t, r.OpenImage, g2.ID, regrown)
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
}

func TestSlotsIterator(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	img := make([]byte, 1<<20)
	repotest.Fill(rand.New(rand.NewPCG(8, 8)), img[3<<16:4<<16])
	m := backup(t, r, nil, img, nil)
	im, err := r.OpenImage(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var nonZero []uint64
	im.Slots(context.Background(), func(s uint64, zero bool) error {
		if !zero {
			nonZero = append(nonZero, s)
		}
		return nil
	})
	if !slices.Equal(nonZero, []uint64{3}) {
		t.Fatalf("non-zero slots %v, want [3]", nonZero)
	}
	if m.Stats.NewChunks != 1 || m.Stats.ZeroChunks != 15 {
		t.Errorf("stats %+v", m.Stats)
	}
}

func TestLocalBackend(t *testing.T) {
	dir := t.TempDir()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := initRepo(t, be, testOptions())
	rng := rand.New(rand.NewPCG(9, 9))
	img := repotest.Image(rng, 8<<20, 64<<10, 0.2)
	m := backup(t, r, nil, img, nil)
	be2, _ := local.Open(dir)
	r2, err := Open(context.Background(), be2, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	repotest.Verify(t, r2.OpenImage, m.ID, img)
	repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
}

// TestCrashedBackup leaves packs of a backup that never committed or
// aborted (a killed process): Check warns but finds no damage, and Prune
// removes them once the dead writer's lock has expired.
func TestCrashedBackup(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, testOptions())
	ctx := context.Background()
	keep := repotest.Image(rand.New(rand.NewPCG(10, 10)), 2<<20, 64<<10, 0)
	m := backup(t, r, nil, keep, nil)

	dead := reopen(t, r, Options{LockTTL: -1}) // the dead writer's lock is already stale
	w, err := dead.NewWriter(ctx, nil, Meta{Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	img := repotest.Image(rand.New(rand.NewPCG(11, 11)), 4<<20, 64<<10, 0)
	for s := range uint64(40) {
		if err := w.PutChunk(ctx, s, img[s<<16:(s+1)<<16]); err != nil {
			t.Fatal(err)
		}
	}
	// The process dies here: no Commit, no Abort.
	res := repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	if len(res.Warnings) == 0 {
		t.Fatal("unindexed packs not reported")
	}
	st, err := r.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksRemoved == 0 {
		t.Fatal("orphan packs not pruned")
	}
	if res := repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true}); len(res.Warnings) != 0 {
		t.Fatalf("warnings after prune: %v", res.Warnings)
	}
	repotest.Verify(t, r.OpenImage, m.ID, keep)
}

// TestConcurrentWriters runs two backups of the same data at once in one
// process: both must commit and read back. A writer dedups only against
// committed data, so here chunks may be stored twice; the index keeps one
// location and Check must accept the duplicate.
func TestConcurrentWriters(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(12, 12)), 4<<20, 64<<10, 0.1)
	ms := make([]*Manifest, 2)
	errs := make(chan error, 2)
	for i := range ms {
		go func() {
			var err error
			ms[i], err = tryBackup(context.Background(), r, nil, img, nil)
			errs <- err
		}()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		repotest.Verify(t, r.OpenImage, m.ID, img)
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
}

func dataBytes(t *testing.T, be backend.Backend) int64 {
	var n int64
	be.List(context.Background(), backend.Data, func(fi backend.FileInfo) error { n += fi.Size; return nil })
	return n
}

// TestPruneRepack forgets a parent whose chunks were partly overwritten
// by its child: the parent's packs are partly dead, so Prune must move
// their live blobs and free the rest, keeping the child intact.
func TestPruneRepack(t *testing.T) {
	for _, unenc := range []bool{false, true} {
		t.Run(fmt.Sprint("unencrypted=", unenc), func(t *testing.T) {
			be := mem.New()
			opts := testOptions()
			opts.Unencrypted = unenc
			opts.RepackUnused = 0.05
			r := initRepo(t, be, opts)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(13, 13))
			img := repotest.Image(rng, 8<<20, 64<<10, 0)
			parent := backup(t, r, nil, img, nil)
			child := backup(t, r, parent, img, slotsOf(repotest.Mutate(rng, img, 64<<10, 0.2)))
			before := dataBytes(t, be)
			if err := r.Forget(ctx, parent.ID); err != nil {
				t.Fatal(err)
			}
			st, err := r.Prune(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.PacksRepacked == 0 || dataBytes(t, be) >= before {
				t.Fatalf("nothing repacked: %+v, %d -> %d bytes", st, before, dataBytes(t, be))
			}
			r2, err := Open(ctx, be, testPassword, testSettings())
			if err != nil {
				t.Fatal(err)
			}
			repotest.Verify(t, r2.OpenImage, child.ID, img)
			if res := repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true}); len(res.Warnings) != 0 {
				t.Fatalf("warnings: %v", res.Warnings)
			}
		})
	}
}

// TestLockRefresh forces a refresh on every pack upload from concurrent
// PutChunk callers: the lock must stay held (one live file) throughout.
func TestLockRefresh(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, Options{PackSize: 64 << 10, PageSlots: 256, KDF: testKDF,
		LockTTL: time.Nanosecond}) // every upload refreshes
	img := repotest.Image(rand.New(rand.NewPCG(14, 14)), 2<<20, 64<<10, 0)
	m := backup(t, r, nil, img, nil)
	repotest.Verify(t, r.OpenImage, m.ID, img)
	if n := count(t, be, backend.Locks); n != 0 {
		t.Fatalf("%d lock files left", n)
	}
}

// With a lock wait, a backup started during a prune starts when the
// prune's lock goes away instead of failing.
func TestLockWait(t *testing.T) {
	r := initRepo(t, mem.New(), testOptions())
	ctx := context.Background()
	l, err := r.Lock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		l.Unlock(ctx)
		close(released)
	}()
	r.SetLockWait(10 * time.Second)
	w, err := r.NewWriter(ctx, nil, Meta{Size: 1 << 20})
	if err != nil {
		t.Fatalf("waiting writer: %v", err)
	}
	select {
	case <-released:
	default:
		t.Fatal("the writer got its lock while the exclusive lock was held")
	}
	w.Abort(ctx)
	r.SetLockWait(0)
	l, _ = r.Lock(ctx, true)
	defer l.Unlock(ctx)
	if _, err := r.NewWriter(ctx, nil, Meta{Size: 1 << 20}); !errors.Is(err, ErrLocked) {
		t.Fatalf("without a wait: %v", err)
	}
}

// TestKeyFile: a key file opens the repository without the password, a
// wrong one or a password does not open its slot, and removing the
// password's slot revokes the password but never the last slot.
func TestKeyFile(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := initRepo(t, be, testOptions())
	text := NewKeyFile()
	secret, err := ParseKeyFile(text)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddKey(ctx, Secret{KeyFile: secret}, KDFParams{}); err != nil {
		t.Fatal(err)
	}
	checkWith(t, Secret{KeyFile: secret}) // the password's slot goes below
	if _, err := OpenWith(ctx, be, Secret{KeyFile: secret}, testSettings()); err != nil {
		t.Fatalf("open with key file: %v", err)
	}
	other, _ := ParseKeyFile(NewKeyFile())
	for name, s := range map[string]Secret{"wrong key file": {KeyFile: other}, "key file text as password": {Password: string(text)}} {
		if _, err := OpenWith(ctx, be, s, testSettings()); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	keys, err := r.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %+v %v", keys, err)
	}
	for _, k := range keys {
		if !k.KeyFile {
			if err := r.RemoveKey(ctx, k.ID[:8]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := Open(ctx, be, testPassword, testSettings()); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed password still opens: %v", err)
	}
	keys, _ = r.Keys(ctx)
	if err := r.RemoveKey(ctx, keys[0].ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("removing the last key: %v", err)
	}
	if _, err := OpenWith(ctx, be, Secret{KeyFile: secret}, testSettings()); err != nil {
		t.Fatalf("key file after removals: %v", err)
	}
	for _, bad := range []string{"", "blockwise-key-v1 abcd", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
		if _, err := ParseKeyFile([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ParseKeyFile(%q): %v", bad, err)
		}
	}
}

// TestPruneDryRun reports what Prune then does, to the pack, writing and
// removing nothing itself; its bytes leave out the new packs' headers.
func TestPruneDryRun(t *testing.T) {
	be := mem.New()
	opts := testOptions()
	opts.RepackUnused = 0.05 // so some packs are repacked too
	r := initRepo(t, be, opts)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(15, 15))
	img := repotest.Image(rng, 8<<20, 64<<10, 0)
	parent := backup(t, r, nil, img, nil)
	child := backup(t, r, parent, img, slotsOf(repotest.Mutate(rng, img, 64<<10, 0.2)))
	other := backup(t, r, nil, repotest.Image(rng, 2<<20, 64<<10, 0), nil)
	for _, id := range []ID{parent.ID, other.ID} {
		if err := r.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	names := func() string {
		var out []string
		for _, typ := range []backend.FileType{backend.Data, backend.Index} {
			be.List(ctx, typ, func(fi backend.FileInfo) error { out = append(out, fi.Name); return nil })
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	before := names()
	dry, err := r.PruneWith(ctx, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if names() != before {
		t.Fatal("a dry run changed the repository")
	}
	st, err := r.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.PacksRemoved != st.PacksRemoved || dry.PacksRepacked != st.PacksRepacked || dry.PacksRepacked == 0 ||
		dry.BytesRemoved < st.BytesRemoved || dry.BytesRemoved > st.BytesRemoved+int64(st.PacksRepacked)*4096 {
		t.Fatalf("dry run %+v, prune %+v", dry, st)
	}
	repotest.Verify(t, r.OpenImage, child.ID, img)
}

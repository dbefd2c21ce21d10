package repo

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// repairFixture is a repository with three restore points spread over
// several index files (one-chunk packs, index files every 64 packs).
type repairFixture struct {
	be     *mem.Backend
	r      *Repository
	points []*Manifest
	images [][]byte
}

func newRepairFixture(t *testing.T) *repairFixture {
	t.Helper()
	f := &repairFixture{be: mem.New()}
	f.r = initRepo(t, f.be, smallPacks())
	rng := rand.New(rand.NewPCG(31, 31))
	img := repotest.Image(rng, 2*indexEvery<<16, 64<<10, 0.1)
	var parent *Manifest
	for i := 0; i < 3; i++ {
		slots := repotest.Mutate(rng, img, 64<<10, 0.2)
		var ss []uint64 // nil: all slots
		if parent != nil {
			ss = slotsOf(slots)
		}
		parent = backup(t, f.r, parent, img, ss)
		f.points = append(f.points, parent)
		f.images = append(f.images, slices.Clone(img))
	}
	if n := count(t, f.be, backend.Index); n < 3 {
		t.Fatalf("fixture has %d index files, want several", n)
	}
	return f
}

func (f *repairFixture) names(t *testing.T, typ backend.FileType) []string {
	t.Helper()
	var out []string
	err := f.be.List(context.Background(), typ, func(fi backend.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func (f *repairFixture) remove(t *testing.T, typ backend.FileType, name string) {
	t.Helper()
	if err := f.be.Remove(context.Background(), backend.Handle{Type: typ, Name: name}); err != nil {
		t.Fatal(err)
	}
}

// chunksOnlyIndexFile names an index file that names no page: losing it
// leaves every page readable, so only prune's own check of the chunks
// stands between it and deleting their packs as orphans.
func (f *repairFixture) chunksOnlyIndexFile(t *testing.T) string {
	t.Helper()
	for _, n := range f.names(t, backend.Index) {
		packs, err := f.r.readIndexFile(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(packs, func(p packInfo) bool {
			return slices.ContainsFunc(p.Entries, func(e packEntry) bool { return e.Type == BlobPage })
		}) {
			return n
		}
	}
	t.Fatal("every index file names a page")
	return ""
}

// verifyAll opens the repository afresh and restores every point.
func (f *repairFixture) verifyAll(t *testing.T) *Repository {
	t.Helper()
	r, err := Open(context.Background(), f.be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range f.points {
		repotest.Verify(t, r.OpenImage, m.ID, f.images[i])
	}
	return r
}

// A lost index file: prune refuses and removes nothing, check says so,
// repair index brings every point back, and prune then runs.
func TestRepairIndexLostFile(t *testing.T) {
	f := newRepairFixture(t)
	ctx := context.Background()
	f.remove(t, backend.Index, f.chunksOnlyIndexFile(t))
	packs, idx := f.names(t, backend.Data), f.names(t, backend.Index)
	r, err := Open(ctx, f.be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("prune with an index file lost: %v", err)
	}
	if !slices.Equal(f.names(t, backend.Data), packs) || !slices.Equal(f.names(t, backend.Index), idx) {
		t.Fatal("prune removed files although it refused")
	}
	res, err := r.Check(ctx, CheckOptions{})
	if err == nil || !slices.ContainsFunc(res.Errors, func(e error) bool {
		return errors.Is(e, ErrIncomplete) && strings.Contains(e.Error(), " slot ") // named by the exact walk
	}) {
		t.Fatalf("check with an index file lost: %v", err)
	}
	if _, err := r.Stats(ctx); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("stats with an index file lost: %v", err)
	}
	rep, err := r.RepairIndex(ctx, RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Packs != len(packs) || rep.PacksRead == 0 || rep.PacksRead >= len(packs) || len(rep.Damaged) != 0 || rep.OldIndexFiles != len(idx) {
		t.Fatalf("repair: %+v, %d packs, %d old index files", rep, len(packs), len(idx))
	}
	r2 := f.verifyAll(t)
	repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
	if _, err := r2.Prune(ctx); err != nil {
		t.Fatalf("prune after repair: %v", err)
	}
	f.verifyAll(t)
}

// A damaged index file makes Open refuse the repository; OpenNoIndex
// still checks it (the damage is reported as an incomplete index) and
// repairs it.
func TestRepairIndexDamagedFile(t *testing.T) {
	f := newRepairFixture(t)
	ctx := context.Background()
	bad := f.names(t, backend.Index)[1]
	h := backend.Handle{Type: backend.Index, Name: bad}
	data, err := backend.LoadAll(ctx, f.be, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	f.remove(t, backend.Index, bad)
	if err := f.be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, f.be, testPassword, testSettings()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a damaged index file: %v", err)
	}
	r, err := OpenNoIndex(ctx, f.be, Secret{Password: testPassword}, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	res, _ := r.Check(ctx, CheckOptions{})
	if !slices.ContainsFunc(res.Errors, func(e error) bool { return errors.Is(e, ErrIncomplete) }) {
		t.Fatalf("check of a damaged index file: %v", res.Errors)
	}
	rep, err := r.RepairIndex(ctx, RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.BadIndexFiles, []string{bad}) || slices.Contains(f.names(t, backend.Index), bad) {
		t.Fatalf("repair: %+v; index files now %v", rep, f.names(t, backend.Index))
	}
	f.verifyAll(t)
}

// ReadAllPacks reads every header and indexes the same blobs as before,
// including a pack named by the hash of its whole content (as packs were
// before headers named them) and an unindexed pack; a pack with a
// damaged header is listed and not indexed.
func TestRepairIndexReadAllPacks(t *testing.T) {
	f := newRepairFixture(t)
	allowDamage(t)
	ctx := context.Background()
	before, _ := indexedPacks(t, f.r)
	packs := f.names(t, backend.Data)
	// Rename one pack to the hash of its whole content.
	old := packs[0]
	data, err := backend.LoadAll(ctx, f.be, backend.Handle{Type: backend.Data, Name: old}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	legacy := fileID(data).String()
	if err := f.be.Save(ctx, backend.Handle{Type: backend.Data, Name: legacy}, data); err != nil {
		t.Fatal(err)
	}
	f.remove(t, backend.Data, old)
	// Damage another pack's header (its last bytes before the trailer).
	dmg := packs[1]
	h := backend.Handle{Type: backend.Data, Name: dmg}
	data, err = backend.LoadAll(ctx, f.be, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-packTrailerSize-1] ^= 1
	f.remove(t, backend.Data, dmg)
	if err := f.be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	rep, err := f.r.RepairIndex(ctx, RepairIndexOptions{ReadAllPacks: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksRead != len(packs) || !slices.Equal(rep.Damaged, []string{dmg}) || rep.Packs != len(packs)-1 {
		t.Fatalf("repair: %+v of %d packs", rep, len(packs))
	}
	after, _ := indexedPacks(t, f.r)
	want := map[ID]bool{}
	for id := range before {
		want[id] = true
	}
	delete(want, mustParseID(t, old))
	delete(want, mustParseID(t, dmg))
	want[mustParseID(t, legacy)] = true
	if len(after) != len(want) {
		t.Fatalf("%d packs indexed after repair, want %d", len(after), len(want))
	}
	for id := range want {
		if !after[id] {
			t.Fatalf("pack %v not indexed after repair", id)
		}
	}
	r, err := Open(ctx, f.be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx); !errors.Is(err, ErrIncomplete) && !errors.Is(err, ErrNotFound) {
		t.Fatalf("prune with a damaged pack's blobs unindexed: %v", err)
	}
}

func mustParseID(t *testing.T, s string) ID {
	t.Helper()
	id, err := ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A file in the data directory that is not a pack is warned about by
// check, prune and repair index alike, and left where it is.
func TestStrayDataFileWarned(t *testing.T) {
	f := newRepairFixture(t)
	ctx := context.Background()
	stray := backend.Handle{Type: backend.Data, Name: "not-a-pack"}
	if err := f.be.Save(ctx, stray, []byte("not a pack")); err != nil {
		t.Fatal(err)
	}
	warned := func(what string, ws []string) {
		t.Helper()
		if !slices.ContainsFunc(ws, func(w string) bool { return strings.Contains(w, `"not-a-pack"`) }) {
			t.Errorf("%s warnings %q name no stray file", what, ws)
		}
	}
	res, err := f.r.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warned("check", res.Warnings)
	st, err := f.r.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	warned("prune", st.Warnings)
	rep, err := f.r.RepairIndex(ctx, RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	warned("repair index", rep.Warnings)
	if _, err := f.be.Stat(ctx, stray); err != nil {
		t.Fatalf("stray file after prune and repair: %v", err)
	}
	f.verifyAll(t)
}

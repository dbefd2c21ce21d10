package repo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo/repotest"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// powerSeeds is the fixed seed list of the default mode; BLOCKWISE_LONG
// adds random seeds and more cuts a seed.
var powerSeeds = []uint64{1, 2, 3, 4, 5, 6, 7, 8}

// TestPowerCut runs backups (full and incremental), forgets, prunes and
// index repairs on the local backend over a vfstest.CrashFS and cuts the
// power inside them, at a counted file-system call, with a torn cut
// (unsynced pages and directory changes each survive or not). After each
// cut the repository opens, Check(readData) finds no damage (warnings,
// the leftovers Prune removes, are allowed), every acknowledged backup
// restores byte-exact, no forgotten one is back, and a manifest nobody
// acknowledged is the backup in flight, whole (docs/repository.md,
// invariants R1-R4).
func TestPowerCut(t *testing.T) {
	seeds, cuts := powerSeeds, 12
	if n, _ := strconv.Atoi(os.Getenv("BLOCKWISE_POWER_CUTS")); n > 0 { // scripts/soak.sh
		seeds = nil
		for range (n + cuts - 1) / cuts {
			seeds = append(seeds, rand.Uint64())
		}
		defer func() { fmt.Printf("cuts: repository %d\n", len(seeds)*cuts) }()
	} else if os.Getenv("BLOCKWISE_LONG") != "" {
		cuts = 60
		for range 32 {
			seeds = append(seeds, rand.Uint64())
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			p := newPowerRepo(t, seed)
			for i := range cuts {
				p.cutOnce(i)
			}
			t.Logf("%d cuts: %d points live, %d forgotten, %d check warnings", cuts, len(p.committed), len(p.forgotten), p.warnings)
		})
	}
}

// powerRepo is a repository on a CrashFS and what its writers were told.
type powerRepo struct {
	t         *testing.T
	rng       *rand.Rand
	fsys      *vfstest.CrashFS
	r         *Repository
	img       []byte
	committed map[ID][]byte // acknowledged, not forgotten
	forgotten map[ID]bool
	// inflight is the image of the backup the cut interrupted, if any:
	// its manifest may have landed.
	inflight []byte
	warnings int // Check's, summed over the cuts
	// forgetting is the point whose Forget the cut interrupted.
	forgetting ID
}

func newPowerRepo(t *testing.T, seed uint64) *powerRepo {
	fsys := vfstest.NewCrashFS()
	be, err := local.Open("/repo", local.WithFS(fsys))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(context.Background(), be, testPassword, withTestSettings(smallPacks()))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	return &powerRepo{t: t, rng: rng, fsys: fsys, r: r, img: repotest.Image(rng, 96<<10, 16<<10, 0.2),
		committed: map[ID][]byte{}, forgotten: map[ID]bool{}}
}

// cutOnce arms a cut some file-system calls ahead, works until it lands,
// reboots and verifies.
func (p *powerRepo) cutOnce(i int) {
	t, ctx := p.t, context.Background()
	p.fsys.CutAfter(p.rng.IntN(150), p.rng.Int64())
	p.inflight, p.forgetting = nil, ID{}
	var err error
	for err == nil {
		err = p.step(ctx)
	}
	if p.fsys.Crashed() == nil {
		t.Fatalf("cut %d: the work stopped with %v, not the cut", i, err)
	}
	p.fsys = p.fsys.Crashed()
	be, err := local.Open("/repo", local.WithFS(p.fsys))
	if err != nil {
		t.Fatalf("cut %d: backend after the cut: %v", i, err)
	}
	if p.r, err = Open(ctx, be, testPassword, testSettings()); err != nil {
		t.Fatalf("cut %d: repository after the cut: %v", i, err)
	}
	p.verify(ctx, i)
}

// step runs one random operation; an error ends the round (the cut).
func (p *powerRepo) step(ctx context.Context) error {
	switch op := p.rng.IntN(10); {
	case op < 5:
		return p.backup(ctx)
	case op < 7:
		ids := slices.SortedFunc(mapKeys(p.committed), func(a, b ID) int { return slices.Compare(a[:], b[:]) })
		if len(ids) < 2 {
			return p.backup(ctx)
		}
		id := ids[p.rng.IntN(len(ids))]
		if err := p.r.Forget(ctx, id); err != nil {
			p.forgetting = id // may have landed: either way is right
			return err
		}
		p.forgotten[id] = true
		delete(p.committed, id)
		return nil
	case op < 9:
		_, err := p.r.Prune(ctx)
		return err
	default:
		_, err := p.r.RepairIndex(ctx, RepairIndexOptions{ReadAllPacks: p.rng.IntN(2) == 0})
		return err
	}
}

func mapKeys(m map[ID][]byte) func(func(ID) bool) {
	return func(yield func(ID) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// backup changes the image a little and backs it up in full: a parent
// would tie this round to a manifest the previous cut may have undone.
func (p *powerRepo) backup(ctx context.Context) error {
	repotest.Mutate(p.rng, p.img, 16<<10, 0.2)
	p.inflight = slices.Clone(p.img)
	m, err := tryBackup(ctx, p.r, nil, p.img, nil)
	if err != nil {
		return err
	}
	p.committed[m.ID], p.inflight = p.inflight, nil
	return nil
}

// verify: the repository after the cut is clean and holds exactly what
// was acknowledged (format of the checks: TestFaultInjection's).
func (p *powerRepo) verify(ctx context.Context, i int) {
	t := p.t
	if _, err := p.r.Unlock(ctx, true); err != nil { // the dead process's locks
		t.Fatalf("cut %d: unlock: %v", i, err)
	}
	res, err := p.r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil {
		t.Fatalf("cut %d: check after the cut: %v (warnings %v)", i, err, res.Warnings)
	}
	p.warnings += len(res.Warnings)
	ms, err := p.r.ListManifests(ctx)
	if err != nil {
		t.Fatalf("cut %d: %v", i, err)
	}
	seen := map[ID]bool{}
	for _, m := range ms {
		seen[m.ID] = true
		want, ok := p.committed[m.ID]
		switch {
		case ok:
			repotest.Verify(t, p.r.OpenImage, m.ID, want)
		case p.forgotten[m.ID]:
			t.Fatalf("cut %d: forgotten point %v is back", i, m.ID.Short())
		case p.inflight != nil && imageEquals(p.r, m.ID, p.inflight):
			p.committed[m.ID] = p.inflight // committed as the power failed
		default:
			t.Fatalf("cut %d: manifest %v matches no backup", i, m.ID.Short())
		}
	}
	for id := range p.committed {
		if id == p.forgetting && !seen[id] { // its Forget landed
			delete(p.committed, id)
			p.forgotten[id] = true
			continue
		}
		if !seen[id] {
			t.Fatalf("cut %d: acknowledged point %v lost", i, id.Short())
		}
	}
}

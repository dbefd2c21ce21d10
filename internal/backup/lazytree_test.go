package backup

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// TestGroupTreeModel: random sparse writes across an 8 TiB virtual disk
// (32,768 groups of 4096 leaves): data leaves, zero-block leaves again,
// leaves set in groups stored already (read back), in ascending runs as
// a copy sets them with the watermark passing groups. After each round
// the groupTree's root and leaves equal a hashtree.Tree model's. Then
// the point is committed (its groups sparse, docs/repository.md T10) and
// an incremental over it, loading groups by need, agrees with the model
// too. The repository holds the tree alone: no image is stored.
func TestGroupTreeModel(t *testing.T) {
	const size, bs = 8 << 40, 64 << 10
	ctx := context.Background()
	r, err := repo.Init(ctx, mem.New(), "secret", repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 8 << 10, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	model, err := hashtree.New(size, bs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(23, 7))
	w, err := r.NewWriter(ctx, nil, repo.Meta{Disk: "m", Size: size})
	if err != nil {
		t.Fatal(err)
	}
	p := &prover{bs: bs, chunk: bs, t: newGroupTree(size, bs)}
	p.storeInto(ctx, w)
	for round := range 4 {
		modelRound(t, rng, p, model, round)
	}
	if err := w.SetTree(p.t, false); err != nil {
		t.Fatal(err)
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadTree(ctx, m); err != nil {
		t.Fatal(err)
	}
	t2, err := parentGroupTree(ctx, r, m)
	if err != nil {
		t.Fatal(err)
	}
	p2 := &prover{bs: bs, chunk: bs, t: t2}
	for round := range 2 {
		modelRound(t, rng, p2, model, 10+round)
	}
	// Without a writer to store them, the incremental holds every group
	// it set a leaf in: sparse, their data leaves alone (dense, 128 KiB
	// each: ~470 MiB here).
	if p2.t.heldGroups > 2*2900 || p2.t.held > 4<<20 {
		t.Fatalf("the incremental holds %d groups, %d bytes of leaves", p2.t.heldGroups, p2.t.held)
	}
	t.Logf("incremental: %d groups held, %d bytes of leaves", p2.t.heldGroups, p2.t.held)
}

// modelRound sets 2000 random leaves (a quarter zero-block leaves, some
// in a cluster that fills part of a group), in ascending runs with the
// watermark passing, and compares the trees.
func modelRound(t *testing.T, rng *rand.Rand, p *prover, model *hashtree.Tree, round int) {
	t.Helper()
	leaves := model.Leaves()
	idx := make([]int64, 0, 2900)
	for range 2000 {
		idx = append(idx, rng.Int64N(leaves))
	}
	base := rng.Int64N(leaves - 1000)
	for k := range int64(900) { // a group turning dense (675 data leaves)
		idx = append(idx, base+k)
	}
	slices.Sort(idx)
	for n, i := range idx {
		h := hashtree.ZeroLeaf(int(p.bs))
		if rng.IntN(4) != 0 {
			h = hashtree.LeafHash([]byte{byte(round), byte(n), byte(n >> 8), byte(i)}, int(p.bs))
		}
		if err := p.t.Set(i, h); err != nil {
			t.Fatal(err)
		}
		if err := model.Set(i, h); err != nil {
			t.Fatal(err)
		}
		if n%300 == 299 { // the copy passed everything below i
			if err := p.passed(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := p.t.Root(), model.Root(); got != want {
		t.Fatalf("round %d: root %x, the model's %x", round, got[:8], want[:8])
	}
	for k := range 300 {
		i := rng.Int64N(leaves)
		if k%2 == 0 {
			i = idx[rng.IntN(len(idx))]
		}
		got, err := p.t.Leaf(i)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := model.Leaf(i); got != want {
			t.Fatalf("round %d: leaf %d differs from the model's", round, i)
		}
	}
}

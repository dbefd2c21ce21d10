package repo

import (
	"context"
	"errors"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// treeProver proves points' trees from their chunks for Check with
// ReadData (docs/repository.md, T6): each slot's chunk is hashed into
// leaves, which must equal the point's stored leaves; with every slot
// proven, the stored tree's root (checked against the manifest by
// loadTree, T4) is the image's. The pack check hashed every chunk it
// read (sums), so a slot is proven from its chunk's sum without reading
// the chunk again; a chunk is read here only when its sum differs (to
// name the leaf) or is missing (a damaged blob). Those leaves are cached
// by chunk ID and block size (by ID alone, a chunk proven at one block
// size gave its leaves to a point of another: a false "not the hash of
// its data", TestCheckReadsChunksOnce).
type treeProver struct {
	r     *Repository
	x     *index
	o     CheckOptions
	sums  *leafSums
	cache map[leafKey][]hashtree.Hash
}

type leafKey struct {
	id ID
	bs int
}

// maxProverCache bounds the leaf cache (entries): ~100 MiB at most.
const maxProverCache = 1 << 20

func (p *treeProver) check(ctx context.Context, m *Manifest, res *CheckResult) {
	if m.Tree == nil {
		return
	}
	for g, id := range m.Tree.Groups {
		if !id.IsZero() && !p.x.has(BlobPage, id) {
			res.errorf("manifest %v: tree group %d (%v) in no index file: %w (%w)", m.ID.Short(), g, id.Short(), ErrIncomplete, ErrCorrupt)
			return
		}
	}
	t, err := p.r.loadTree(ctx, p.x, m)
	if err != nil {
		res.Errors = append(res.Errors, err)
		return
	}
	bs := int(m.Tree.BlockSize)
	if !p.o.ReadData || int(m.ChunkSize)%bs != 0 {
		return
	}
	before := len(res.Errors)
	for pi := range m.Pages {
		if err := p.provePage(ctx, m, t, uint64(pi), res); err != nil {
			res.Errors = append(res.Errors, err)
			return
		}
	}
	if len(res.Errors) == before && p.o.ReadPack == nil {
		res.RootsProven++
	}
}

// provePage compares the leaves of page pi's slots with the tree's;
// slots whose chunk is in a pack the check does not read are skipped.
func (p *treeProver) provePage(ctx context.Context, m *Manifest, t *hashtree.Tree, pi uint64, res *CheckResult) error {
	pg := make([]ID, m.pageLen(pi))
	if !m.Pages[pi].IsZero() {
		var err error
		if pg, err = p.r.loadPage(ctx, p.x, m, pi); err != nil {
			return err
		}
	}
	per := int64(m.ChunkSize) / int64(m.Tree.BlockSize)
	for i, id := range pg {
		slot := pi*uint64(m.PageSlots) + uint64(i)
		if p.provenBySum(m, t, slot, id) {
			continue
		}
		leaves, ok, err := p.leaves(ctx, m, slot, id)
		if err != nil || !ok {
			return err
		}
		for k, want := range leaves {
			leaf := int64(slot)*per + int64(k)
			if got, _ := t.Leaf(leaf); got != want {
				res.errorf("manifest %v: leaf %d (offset %d) of its tree is not the hash of its data: %w", m.ID.Short(), leaf, leaf*int64(m.Tree.BlockSize), ErrCorrupt)
				return nil
			}
		}
	}
	return nil
}

// provenBySum reports whether the tree's leaves of a slot are those of
// its chunk by the sum the pack check made of them: the chunk's leaves
// (ceil(raw/B)) sum to it, and the slot's leaves past them are zero
// blocks' (a chunk holds its slot's bytes). False sends the slot to the
// read path, which names the leaf that differs.
func (p *treeProver) provenBySum(m *Manifest, t *hashtree.Tree, slot uint64, id ID) bool {
	bs := int(m.Tree.BlockSize)
	if id.IsZero() || p.sums == nil {
		return false
	}
	l, ok := p.x.lookup(BlobChunk, id)
	if !ok {
		return false
	}
	sum, ok := p.sums.get(id, bs)
	if !ok {
		return false
	}
	slotLen := int(min(uint64(m.ChunkSize), m.Size-slot*uint64(m.ChunkSize)))
	n, k := (slotLen+bs-1)/bs, (int(l.Raw)+bs-1)/bs
	if k > n {
		return false
	}
	first := int64(slot) * (int64(m.ChunkSize) / int64(bs))
	leaves := make([]hashtree.Hash, n)
	for j := range leaves {
		leaves[j], _ = t.Leaf(first + int64(j))
		if j >= k && leaves[j] != hashtree.ZeroLeaf(bs) {
			return false
		}
	}
	return sumLeaves(leaves[:k], bs) == sum
}

// leaves are the leaves of one slot holding chunk id; ok is false when
// the check does not read the chunk's pack.
func (p *treeProver) leaves(ctx context.Context, m *Manifest, slot uint64, id ID) ([]hashtree.Hash, bool, error) {
	bs := int(m.Tree.BlockSize)
	slotLen := int(min(uint64(m.ChunkSize), m.Size-slot*uint64(m.ChunkSize)))
	n := (slotLen + bs - 1) / bs
	if id.IsZero() {
		out := make([]hashtree.Hash, n)
		for i := range out {
			out[i] = hashtree.ZeroLeaf(bs)
		}
		return out, true, nil
	}
	if l, ok := p.x.lookup(BlobChunk, id); !ok {
		return nil, false, nil // reported by checkManifest
	} else if p.o.ReadPack != nil && !p.o.ReadPack(l.Pack) {
		return nil, false, nil
	}
	if c, ok := p.cache[leafKey{id, bs}]; ok && len(c) >= n {
		return c[:n], true, nil
	}
	data, err := p.r.loadBlobFrom(ctx, p.x, BlobChunk, id)
	if errors.Is(err, ErrCorrupt) {
		return nil, false, nil // reported by the pack's check
	} else if err != nil {
		return nil, false, err
	}
	out := make([]hashtree.Hash, n)
	for k := range out {
		block := data[min(k*bs, len(data)):min((k+1)*bs, len(data))]
		out[k] = hashtree.LeafHash(block, bs)
	}
	if len(p.cache) >= maxProverCache {
		clear(p.cache)
	}
	p.cache[leafKey{id, bs}] = out
	return out, true, nil
}

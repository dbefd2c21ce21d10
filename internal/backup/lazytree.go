package backup

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// groupTree is a backup's tree by leaf groups (docs/repository.md, T7):
// only the groups the backup sets a leaf in (or asks a leaf of) are
// loaded from the parent; the others are known by their tops, and the
// root is folded over the tops. So an incremental's cost follows its
// change, not the disk's size. Not safe for concurrent use.
type groupTree struct {
	size    int64
	bs      int
	leaves  int64
	tops    []hashtree.Hash
	groups  map[int][]hashtree.Hash // loaded, by group
	changed map[int]bool
	// load returns a group's leaves as the parent had them (nil: the
	// parent has none, zero leaves).
	load func(g int) ([]hashtree.Hash, error)
}

// newGroupTree is the tree of an all-zero image (a full backup's start).
func newGroupTree(size int64, bs int) *groupTree {
	t := &groupTree{size: size, bs: bs, leaves: (size + int64(bs) - 1) / int64(bs),
		groups: map[int][]hashtree.Hash{}, changed: map[int]bool{}}
	t.tops = make([]hashtree.Hash, repo.TreeGroups(size, bs))
	zero := map[int]hashtree.Hash{}
	for g := range t.tops {
		n := repo.GroupLen(size, bs, g)
		if _, ok := zero[n]; !ok {
			zero[n] = repo.GroupTop(zeroLeaves(n, bs), bs)
		}
		t.tops[g] = zero[n]
	}
	return t
}

func zeroLeaves(n, bs int) []hashtree.Hash {
	out := make([]hashtree.Hash, n)
	z := hashtree.ZeroLeaf(bs)
	for i := range out {
		out[i] = z
	}
	return out
}

// parentGroupTree starts from a parent point's tree of the same size:
// its tops, its groups loaded on demand.
func parentGroupTree(ctx context.Context, r *repo.Repository, m *repo.Manifest) (*groupTree, error) {
	tops, err := m.Tree.TreeTops()
	if err != nil {
		return nil, err
	}
	bs := int(m.Tree.BlockSize)
	want, err := m.Tree.RootHash()
	if err != nil {
		return nil, err
	}
	if hashtree.RootHash(repo.FoldTops(tops), int64(m.Size), bs) != want {
		return nil, fmt.Errorf("manifest %v: its tree's group tops do not fold to its root: %w", m.ID.Short(), repo.ErrCorrupt)
	}
	t := newGroupTree(int64(m.Size), bs)
	t.tops = tops
	t.load = func(g int) ([]hashtree.Hash, error) { return r.LoadTreeGroup(ctx, m, g) }
	return t, nil
}

// fromFull is a groupTree holding a whole tree (a parent's, rebuilt or
// resized), every group changed.
func fromFull(full *hashtree.Tree) *groupTree {
	t := newGroupTree(full.Size(), full.BlockSize())
	ft := repo.FullTree{Tree: full}
	for g := range t.tops {
		t.groups[g], _ = ft.GroupLeaves(g)
		t.changed[g] = true
	}
	return t
}

func (t *groupTree) group(g int) ([]hashtree.Hash, error) {
	if l, ok := t.groups[g]; ok {
		return l, nil
	}
	var l []hashtree.Hash
	if t.load != nil {
		var err error
		if l, err = t.load(g); err != nil {
			return nil, err
		}
	}
	if l == nil {
		l = zeroLeaves(repo.GroupLen(t.size, t.bs, g), t.bs)
	}
	t.groups[g] = l
	return l, nil
}

// Set sets leaf i.
func (t *groupTree) Set(i int64, h hashtree.Hash) error {
	if i < 0 || i >= t.leaves {
		return fmt.Errorf("%w: leaf %d of %d", hashtree.ErrRange, i, t.leaves)
	}
	g := int(i / repo.TreeGroupLeaves)
	l, err := t.group(g)
	if err != nil {
		return err
	}
	l[i%repo.TreeGroupLeaves] = h
	t.changed[g] = true
	return nil
}

// Leaf returns leaf i, loading its group.
func (t *groupTree) Leaf(i int64) (hashtree.Hash, error) {
	if i < 0 || i >= t.leaves {
		return hashtree.Hash{}, fmt.Errorf("%w: leaf %d of %d", hashtree.ErrRange, i, t.leaves)
	}
	l, err := t.group(int(i / repo.TreeGroupLeaves))
	if err != nil {
		return hashtree.Hash{}, err
	}
	return l[i%repo.TreeGroupLeaves], nil
}

// Root recomputes the changed groups' tops and folds the root (H3).
func (t *groupTree) Root() hashtree.Hash {
	for g := range t.changed {
		t.tops[g] = repo.GroupTop(t.groups[g], t.bs)
	}
	return hashtree.RootHash(repo.FoldTops(t.tops), t.size, t.bs)
}

// Size implements repo.PointTree.
func (t *groupTree) Size() int64 { return t.size }

// BlockSize implements repo.PointTree.
func (t *groupTree) BlockSize() int { return t.bs }

// Leaves is the number of leaves.
func (t *groupTree) Leaves() int64 { return t.leaves }

// Changed implements repo.PointTree: a leaf of group g was set.
func (t *groupTree) Changed(g int) bool { return t.changed[g] }

// GroupLeaves implements repo.PointTree.
func (t *groupTree) GroupLeaves(g int) ([]hashtree.Hash, error) { return t.group(g) }

// GroupTop implements repo.PointTree (valid after Root).
func (t *groupTree) GroupTop(g int) hashtree.Hash { return t.tops[g] }

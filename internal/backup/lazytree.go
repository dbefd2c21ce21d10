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
// change, not the disk's size. A group holds its data leaves alone
// (hashtree.SparseLeaves): a thin disk's groups hold a few among 4096.
// Not safe for concurrent use.
type groupTree struct {
	size    int64
	bs      int
	leaves  int64
	tops    []hashtree.Hash
	groups  map[int]*hashtree.SparseLeaves // loaded, by group
	changed map[int]bool
	// load returns a group's leaves as the parent had them (nil: the
	// parent has none, zero leaves).
	load func(g int) (*hashtree.SparseLeaves, error)
	// stored are the changed groups the copy passed, stored already
	// (repo.SnapshotWriter.StoreTreeGroup) and dropped from groups; their
	// tops are final. store and reload are the writer's; nil keeps every
	// group in memory until Commit.
	stored map[int]repo.ID
	store  func(leaves *hashtree.SparseLeaves) (repo.ID, error)
	reload func(g int, id repo.ID) (*hashtree.SparseLeaves, error)
	// peek is the last group Leaf read without keeping it.
	peek struct {
		g int
		l *hashtree.SparseLeaves
	}
	// held is the bytes of leaves in groups, maxHeld its peak; heldGroups
	// and maxGroups count the groups (tests).
	held, maxHeld         int64
	heldGroups, maxGroups int
}

// newGroupTree is the tree of an all-zero image (a full backup's start).
func newGroupTree(size int64, bs int) *groupTree {
	t := &groupTree{size: size, bs: bs, leaves: (size + int64(bs) - 1) / int64(bs),
		groups: map[int]*hashtree.SparseLeaves{}, changed: map[int]bool{}, stored: map[int]repo.ID{}}
	t.peek.g = -1
	t.tops = make([]hashtree.Hash, repo.TreeGroups(size, bs))
	zero := map[int]hashtree.Hash{}
	for g := range t.tops {
		n := repo.GroupLen(size, bs, g)
		if _, ok := zero[n]; !ok {
			zero[n] = hashtree.NewSparseLeaves(n, bs).Top()
		}
		t.tops[g] = zero[n]
	}
	return t
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
	t.load = func(g int) (*hashtree.SparseLeaves, error) { return r.LoadTreeGroup(ctx, m, g) }
	return t, nil
}

// fromFull is a groupTree holding a whole tree (a parent's, rebuilt or
// resized), every group changed.
func fromFull(full *hashtree.Tree) *groupTree {
	t := newGroupTree(full.Size(), full.BlockSize())
	ft := repo.FullTree{Tree: full}
	for g := range t.tops {
		l, _ := ft.GroupLeaves(g)
		t.keep(g, l)
		t.changed[g] = true
	}
	return t
}

// group returns group g to modify, keeping it in memory: a stored group
// is read back (and stored again when passed, or at Commit).
func (t *groupTree) group(g int) (*hashtree.SparseLeaves, error) {
	if l, ok := t.groups[g]; ok {
		return l, nil
	}
	l, err := t.fetch(g)
	if err != nil {
		return nil, err
	}
	delete(t.stored, g)
	if t.peek.g == g {
		t.peek.g = -1
	}
	t.keep(g, l)
	return l, nil
}

// fetch reads group g: back from the writer if stored, else from the
// parent, else zero leaves.
func (t *groupTree) fetch(g int) (*hashtree.SparseLeaves, error) {
	var l *hashtree.SparseLeaves
	var err error
	if id, ok := t.stored[g]; ok {
		if l, err = t.reload(g, id); err == nil && l.Top() != t.tops[g] {
			err = fmt.Errorf("tree group %d read back is not the group stored: %w", g, repo.ErrCorrupt)
		}
	} else if t.load != nil {
		l, err = t.load(g)
	}
	if err != nil {
		return nil, err
	}
	if l == nil {
		l = hashtree.NewSparseLeaves(repo.GroupLen(t.size, t.bs, g), t.bs)
	}
	return l, nil
}

func (t *groupTree) keep(g int, l *hashtree.SparseLeaves) {
	t.groups[g] = l
	t.heldGroups++
	t.maxGroups = max(t.maxGroups, t.heldGroups)
	t.grew(l.Bytes())
}

// grew counts n more bytes of leaves held (n < 0: fewer).
func (t *groupTree) grew(n int64) {
	t.held += n
	t.maxHeld = max(t.maxHeld, t.held)
}

// pass stores the changed groups below group end and drops them from
// memory (docs/repository.md T9, write ordering 1): the copy has set
// every leaf it will set there, so a full backup holds the groups under
// the copy's work in progress, not 32 bytes for every block of the disk.
// Only Commit's manifest names them (write ordering 3).
func (t *groupTree) pass(end int) error {
	if t.store == nil {
		return nil
	}
	for g, l := range t.groups {
		if g >= end || !t.changed[g] {
			continue
		}
		id, err := t.store(l)
		if err != nil {
			return fmt.Errorf("the point's tree: %w", err)
		}
		t.tops[g] = l.Top()
		t.stored[g] = id
		delete(t.groups, g)
		t.heldGroups--
		t.grew(-l.Bytes())
	}
	return nil
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
	before := l.Bytes()
	l.Set(int(i%repo.TreeGroupLeaves), h)
	t.grew(l.Bytes() - before)
	t.changed[g] = true
	return nil
}

// Leaf returns leaf i, loading its group.
func (t *groupTree) Leaf(i int64) (hashtree.Hash, error) {
	if i < 0 || i >= t.leaves {
		return hashtree.Hash{}, fmt.Errorf("%w: leaf %d of %d", hashtree.ErrRange, i, t.leaves)
	}
	g := int(i / repo.TreeGroupLeaves)
	l, ok := t.groups[g]
	if !ok && t.peek.g == g {
		l, ok = t.peek.l, true
	}
	if !ok { // read, not kept: locate reads every leaf once
		var err error
		if l, err = t.fetch(g); err != nil {
			return hashtree.Hash{}, err
		}
		t.peek.g, t.peek.l = g, l
	}
	return l.At(int(i % repo.TreeGroupLeaves)), nil
}

// Root recomputes the changed groups' tops and folds the root (H3).
func (t *groupTree) Root() hashtree.Hash {
	for g := range t.changed {
		if l, ok := t.groups[g]; ok { // a stored group's top is final
			t.tops[g] = l.Top()
		}
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

// StoredGroup implements repo.PointTree.
func (t *groupTree) StoredGroup(g int) (repo.ID, bool) {
	id, ok := t.stored[g]
	return id, ok
}

// GroupLeaves implements repo.PointTree.
func (t *groupTree) GroupLeaves(g int) (*hashtree.SparseLeaves, error) {
	if l, ok := t.groups[g]; ok {
		return l, nil
	}
	return t.fetch(g)
}

// GroupTop implements repo.PointTree (valid after Root).
func (t *groupTree) GroupTop(g int) hashtree.Hash { return t.tops[g] }

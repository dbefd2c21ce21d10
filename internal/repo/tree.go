package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// TreeRef is a restore point's hash tree (docs/repository.md, "Hash tree
// of a point", invariants T1–T5): the root of the image it holds, and the
// leaves in blobs of type 2, a group of TreeGroupLeaves leaves each.
type TreeRef struct {
	Root      string `json:"root"`       // hex of the H3 root (docs/format.md)
	BlockSize uint32 `json:"block_size"` // the leaves' block size
	// Groups are the blob IDs of the leaf groups; the zero ID stands for a
	// group of zero-block leaves only, which is not stored (T2).
	Groups []ID `json:"groups"`
	// Tops is the hex of each group's top (the root of its leaves' tree,
	// H2), end to end (T7): an incremental loads only the groups it
	// changes and folds the root over the tops.
	Tops string `json:"tops"`
	// Proven: the host's root was equal to this one when the backup
	// committed (T5); false when the host could not tell (a QEMU or
	// libvirt source): the root was computed, not proven.
	Proven bool `json:"proven"`
}

// TreeGroupLeaves is how many leaves one tree blob holds: 4 pages of the
// tree (H4), 128 KiB of leaves, as many as the slots of a full index page
// at the default geometry.
const TreeGroupLeaves = 4 * hashtree.PageLeaves

const treeGroupMagic = "BWTG"

// treeGroupMax is the largest tree blob's plaintext.
const treeGroupMax = 9 + TreeGroupLeaves*32

// ErrNoTree: a restore point has no hash tree (it was written before
// trees were kept, or its backup could not compute one).
var ErrNoTree = errors.New("restore point has no root")

// RootHash parses the point's root.
func (t *TreeRef) RootHash() (hashtree.Hash, error) {
	var h hashtree.Hash
	b, err := hex.DecodeString(t.Root)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("manifest: tree root %q: %w", t.Root, ErrCorrupt)
	}
	copy(h[:], b)
	return h, nil
}

// PointTree is a new point's tree as the writer stores it, group by
// group: a group not Changed keeps its parent's blob and top (T3).
type PointTree interface {
	Size() int64
	BlockSize() int
	Root() hashtree.Hash
	Changed(g int) bool
	// StoredGroup is the blob of changed group g if the backup stored it
	// already (StoreTreeGroup), as the copy passed it.
	StoredGroup(g int) (ID, bool)
	// GroupLeaves are group g's leaves; GroupTop their top, once Root
	// has been computed.
	GroupLeaves(g int) ([]hashtree.Hash, error)
	GroupTop(g int) hashtree.Hash
}

// StoreTreeGroup stores a changed group of the point's tree before
// Commit (docs/repository.md T9), so a backup need not hold every group it set until then (32
// bytes a block: 512 MiB for 1 TiB): the group's blob goes into a pack
// like the pages Done stores (write ordering 1), and only Commit's
// manifest names it (3), so the backup still commits whole or not at
// all. The zero ID stands for a group of zero-block leaves (T2).
func (w *SnapshotWriter) StoreTreeGroup(ctx context.Context, leaves []hashtree.Hash, blockSize int) (ID, error) {
	if err := w.usable(); err != nil {
		return ID{}, err
	}
	plain := encodeTreeGroup(leaves, blockSize)
	if plain == nil {
		return ID{}, nil
	}
	id := w.r.crypt.blobID(plain)
	if err := w.store(ctx, BlobPage, id, plain); err != nil {
		return ID{}, w.fail(err)
	}
	return id, nil
}

// LoadStoredTreeGroup reads back a group of n leaves StoreTreeGroup
// stored (a re-read after a root mismatch sets leaves in it again, T5).
// As in Reopen, a blob still pending is flushed and indexed first
// (write ordering 1–2): rare by design, simple over fast.
func (w *SnapshotWriter) LoadStoredTreeGroup(ctx context.Context, id ID, n, blockSize int) ([]hashtree.Hash, error) {
	leaves := make([]hashtree.Hash, n)
	if id.IsZero() {
		z := hashtree.ZeroLeaf(blockSize)
		for i := range leaves {
			leaves[i] = z
		}
		return leaves, nil
	}
	w.mu.Lock()
	pending := w.pending[blobKey{BlobPage, id}]
	w.mu.Unlock()
	if pending {
		if err := w.pk.flush(ctx); err != nil {
			return nil, w.fail(err)
		}
		if err := w.writeIndex(ctx, 1); err != nil {
			return nil, w.fail(err)
		}
	}
	if err := w.r.readTreeGroup(ctx, w.r.idx, id, leaves); err != nil {
		return nil, fmt.Errorf("repo: tree group stored by this backup: %w", err)
	}
	return leaves, nil
}

// SetTree gives the writer the point's tree, which Commit stores (T1–T3, T7).
func (w *SnapshotWriter) SetTree(t PointTree, proven bool) error {
	if t.Size() != int64(w.meta.Size) {
		return fmt.Errorf("repo: tree of %d bytes for an image of %d: %w", t.Size(), w.meta.Size, ErrInvalid)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tree, w.treeProven = t, proven
	return nil
}

// writeTree stores the groups of the writer's tree that changed and
// returns the manifest's reference to it, nil without a tree.
func (w *SnapshotWriter) writeTree(ctx context.Context) (*TreeRef, error) {
	t := w.tree
	if t == nil {
		return nil, nil
	}
	root := t.Root()
	ref := &TreeRef{Root: hex.EncodeToString(root[:]), BlockSize: uint32(t.BlockSize()), Proven: w.treeProven}
	n := TreeGroups(t.Size(), t.BlockSize())
	ref.Groups = make([]ID, n)
	tops := make([]byte, 0, 32*n)
	var old *TreeRef
	if w.parent != nil && w.parent.Tree != nil && w.parent.Tree.BlockSize == ref.BlockSize && w.parent.Size == w.meta.Size {
		old = w.parent.Tree
	}
	for g := range n {
		top := t.GroupTop(g)
		tops = append(tops, top[:]...)
		if old != nil && !t.Changed(g) && w.indexedOrZero(old.Groups[g]) {
			ref.Groups[g] = old.Groups[g] // T3
			continue
		}
		if id, ok := t.StoredGroup(g); ok {
			ref.Groups[g] = id // stored as the copy passed it
			continue
		}
		leaves, err := t.GroupLeaves(g)
		if err != nil {
			return nil, err
		}
		plain := encodeTreeGroup(leaves, t.BlockSize())
		if plain == nil {
			continue // T2
		}
		id := w.r.crypt.blobID(plain)
		if err := w.store(ctx, BlobPage, id, plain); err != nil {
			return nil, err
		}
		ref.Groups[g] = id
	}
	ref.Tops = hex.EncodeToString(tops)
	return ref, nil
}

// TreeGroups is the number of leaf groups of an image.
func TreeGroups(size int64, blockSize int) int {
	leaves := (size + int64(blockSize) - 1) / int64(blockSize)
	return int((leaves + TreeGroupLeaves - 1) / TreeGroupLeaves)
}

// GroupLen is how many leaves group g of an image holds.
func GroupLen(size int64, blockSize, g int) int {
	leaves := (size + int64(blockSize) - 1) / int64(blockSize)
	return int(min(leaves-int64(g)*TreeGroupLeaves, TreeGroupLeaves))
}

// GroupTop is the top of a group's leaves (H2: the root of their
// left-balanced tree, without H3's size and block size), hashed only
// above its data leaves (hashtree.LeavesTop): a group of a thin disk is
// mostly zero-block leaves.
func GroupTop(leaves []hashtree.Hash, blockSize int) hashtree.Hash {
	return hashtree.LeavesTop(leaves, blockSize)
}

// FoldTops is the top of a tree from its groups' tops (T7): the tree is
// left balanced (H2) and a full group is a whole subtree, so the split
// over groups falls where the split over leaves does.
func FoldTops(tops []hashtree.Hash) hashtree.Hash {
	switch n := len(tops); n {
	case 0:
		return hashtree.Hash{}
	case 1:
		return tops[0]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		return hashtree.NodeHash(FoldTops(tops[:k]), FoldTops(tops[k:]))
	}
}

// TreeTops parses a point's group tops (T7).
func (t *TreeRef) TreeTops() ([]hashtree.Hash, error) {
	b, err := hex.DecodeString(t.Tops)
	if err != nil || len(b) != 32*len(t.Groups) {
		return nil, fmt.Errorf("manifest: %d bytes of tree tops for %d groups: %w", len(b), len(t.Groups), ErrCorrupt)
	}
	out := make([]hashtree.Hash, len(t.Groups))
	for i := range out {
		copy(out[i][:], b[32*i:])
	}
	return out, nil
}

// groupTop decodes group g's top alone: an incremental loading every
// group of a 2 TiB disk's tree decoded all 2048 tops at each (2 TiB of
// hex in all, 15% of its CPU).
func (t *TreeRef) groupTop(g int) (hashtree.Hash, error) {
	var h hashtree.Hash
	if len(t.Tops) != 64*len(t.Groups) || g < 0 || g >= len(t.Groups) {
		return h, fmt.Errorf("manifest: %d hex digits of tree tops for %d groups: %w", len(t.Tops), len(t.Groups), ErrCorrupt)
	}
	if _, err := hex.Decode(h[:], []byte(t.Tops[64*g:64*g+64])); err != nil {
		return h, fmt.Errorf("manifest: tree top %d: %w", g, ErrCorrupt)
	}
	return h, nil
}

// LoadTreeGroup returns group g of point m's tree: its leaves, checked
// against its top (T7), zero-block leaves for a group not stored.
func (r *Repository) LoadTreeGroup(ctx context.Context, m *Manifest, g int) ([]hashtree.Hash, error) {
	top, err := m.Tree.groupTop(g)
	if err != nil {
		return nil, err
	}
	bs := int(m.Tree.BlockSize)
	n := GroupLen(int64(m.Size), bs, g)
	leaves := make([]hashtree.Hash, n)
	if id := m.Tree.Groups[g]; id.IsZero() {
		z := hashtree.ZeroLeaf(bs)
		for i := range leaves {
			leaves[i] = z
		}
	} else if err := r.readTreeGroup(ctx, r.idx, id, leaves); err != nil {
		return nil, fmt.Errorf("manifest %v: tree group %d: %w", m.ID.Short(), g, err)
	}
	if GroupTop(leaves, bs) != top {
		return nil, fmt.Errorf("manifest %v: tree group %d does not have its top: %w", m.ID.Short(), g, ErrCorrupt)
	}
	return leaves, nil
}

// FullTree is a whole hashtree.Tree as a PointTree, every group changed.
type FullTree struct{ *hashtree.Tree }

// Changed implements PointTree.
func (FullTree) Changed(int) bool { return true }

// StoredGroup implements PointTree: nothing is stored before Commit.
func (FullTree) StoredGroup(int) (ID, bool) { return ID{}, false }

// GroupLeaves implements PointTree.
func (t FullTree) GroupLeaves(g int) ([]hashtree.Hash, error) {
	n := GroupLen(t.Size(), t.BlockSize(), g)
	out := make([]hashtree.Hash, n)
	for i := range out {
		out[i], _ = t.Leaf(int64(g)*TreeGroupLeaves + int64(i))
	}
	return out, nil
}

// GroupTop implements PointTree.
func (t FullTree) GroupTop(g int) hashtree.Hash {
	l, _ := t.GroupLeaves(g)
	return GroupTop(l, t.BlockSize())
}

// indexedOrZero: a parent's group can be named again only if an index
// file still holds it (a pack lost, then repair index, drops it).
func (w *SnapshotWriter) indexedOrZero(id ID) bool {
	return id.IsZero() || w.r.idx.has(BlobPage, id)
}

// encodeTreeGroup is a group's blob (T1), nil if all its leaves are
// zero-block leaves (T2).
func encodeTreeGroup(leaves []hashtree.Hash, blockSize int) []byte {
	zero := hashtree.ZeroLeaf(blockSize)
	b := make([]byte, 9, 9+32*len(leaves))
	copy(b, treeGroupMagic)
	b[4] = 1
	binary.LittleEndian.PutUint32(b[5:], uint32(len(leaves)))
	stored := false
	for _, l := range leaves {
		stored = stored || l != zero
		b = append(b, l[:]...)
	}
	if !stored {
		return nil
	}
	return b
}

// decodeTreeGroup checks a group blob's header and length (T1) and
// returns its leaves' bytes.
func decodeTreeGroup(b []byte, want int) ([]byte, error) {
	if len(b) < 9 || !bytes.Equal(b[:4], []byte(treeGroupMagic)) || b[4] != 1 {
		return nil, fmt.Errorf("tree group: bad header: %w", ErrCorrupt)
	}
	n := int(binary.LittleEndian.Uint32(b[5:]))
	if n != want || len(b) != 9+32*n {
		return nil, fmt.Errorf("tree group: %d leaves in %d bytes, want %d: %w", n, len(b), want, ErrCorrupt)
	}
	return b[9:], nil
}

// LoadTree loads a point's hash tree and checks that it has the root the
// manifest names (T4); ErrNoTree for a point without one.
func (r *Repository) LoadTree(ctx context.Context, m *Manifest) (*hashtree.Tree, error) {
	return r.loadTree(ctx, r.idx, m)
}

func (r *Repository) loadTree(ctx context.Context, x *index, m *Manifest) (*hashtree.Tree, error) {
	if m.Tree == nil {
		return nil, ErrNoTree
	}
	want, err := m.Tree.RootHash()
	if err != nil {
		return nil, err
	}
	t, err := hashtree.New(int64(m.Size), int(m.Tree.BlockSize))
	if err != nil {
		return nil, fmt.Errorf("manifest %v: %v: %w", m.ID.Short(), err, ErrCorrupt)
	}
	if len(m.Tree.Groups) != int((t.Leaves()+TreeGroupLeaves-1)/TreeGroupLeaves) {
		return nil, fmt.Errorf("manifest %v: %d tree groups for %d leaves: %w", m.ID.Short(), len(m.Tree.Groups), t.Leaves(), ErrCorrupt)
	}
	for g, id := range m.Tree.Groups {
		if !id.IsZero() {
			if err := r.loadTreeGroup(ctx, x, t, g, id); err != nil {
				return nil, fmt.Errorf("manifest %v: %w", m.ID.Short(), err)
			}
		}
	}
	if got := t.Root(); got != want {
		return nil, fmt.Errorf("manifest %v: its tree's root %x is not the root it names %x: %w", m.ID.Short(), got[:8], want[:8], ErrCorrupt)
	}
	tops, err := m.Tree.TreeTops()
	if err != nil {
		return nil, err
	}
	if hashtree.RootHash(FoldTops(tops), int64(m.Size), int(m.Tree.BlockSize)) != want {
		return nil, fmt.Errorf("manifest %v: its tree's group tops do not fold to its root: %w", m.ID.Short(), ErrCorrupt)
	}
	return t, nil
}

// readTreeGroup loads group blob id into leaves (its length: T1).
func (r *Repository) readTreeGroup(ctx context.Context, x *index, id ID, leaves []hashtree.Hash) error {
	plain, err := r.loadBlobFrom(ctx, x, BlobPage, id)
	if err != nil {
		return err
	}
	raw, err := decodeTreeGroup(plain, len(leaves))
	if err != nil {
		return fmt.Errorf("%v: %w", id.Short(), err)
	}
	for i := range leaves {
		copy(leaves[i][:], raw[32*i:])
	}
	return nil
}

func (r *Repository) loadTreeGroup(ctx context.Context, x *index, t *hashtree.Tree, g int, id ID) error {
	n := int(min(t.Leaves()-int64(g)*TreeGroupLeaves, TreeGroupLeaves))
	leaves := make([]hashtree.Hash, n)
	if err := r.readTreeGroup(ctx, x, id, leaves); err != nil {
		return fmt.Errorf("tree group %d: %w", g, err)
	}
	first := g * (TreeGroupLeaves / hashtree.PageLeaves)
	for p := 0; p*hashtree.PageLeaves < n; p++ {
		if err := t.SetPage(first+p, leaves[p*hashtree.PageLeaves:min((p+1)*hashtree.PageLeaves, n)]); err != nil {
			return fmt.Errorf("tree group %d: %v: %w", g, err, ErrCorrupt)
		}
	}
	return nil
}

// TreeIndexed reports whether every stored group of m's tree is in an
// index file (a pack lost, then repair index, drops some).
func (r *Repository) TreeIndexed(m *Manifest) bool {
	if m.Tree == nil {
		return false
	}
	for _, id := range m.Tree.Groups {
		if !id.IsZero() && !r.idx.has(BlobPage, id) {
			return false
		}
	}
	return true
}

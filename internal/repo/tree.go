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

// The two encodings of a group blob (T1): version 1 lists every leaf,
// version 2 only the data leaves (T10).
const (
	treeGroupDense  = 1
	treeGroupSparse = 2
)

// treeGroupMax is the largest tree blob's plaintext: a writer chooses
// the shorter encoding, so a dense one of a full group.
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
	GroupLeaves(g int) (*hashtree.SparseLeaves, error)
	GroupTop(g int) hashtree.Hash
}

// StoreTreeGroup stores a changed group of the point's tree before
// Commit (docs/repository.md T9), so a backup need not hold every group it set until then (32
// bytes a block: 512 MiB for 1 TiB): the group's blob goes into a pack
// like the pages Done stores (write ordering 1), and only Commit's
// manifest names it (3), so the backup still commits whole or not at
// all. The zero ID stands for a group of zero-block leaves (T2).
func (w *SnapshotWriter) StoreTreeGroup(ctx context.Context, leaves *hashtree.SparseLeaves) (ID, error) {
	if err := w.usable(); err != nil {
		return ID{}, err
	}
	plain := encodeTreeGroup(leaves)
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
func (w *SnapshotWriter) LoadStoredTreeGroup(ctx context.Context, id ID, n, blockSize int) (*hashtree.SparseLeaves, error) {
	if id.IsZero() {
		return hashtree.NewSparseLeaves(n, blockSize), nil
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
	leaves, err := w.r.readTreeGroup(ctx, w.r.idx, id, n, blockSize)
	if err != nil {
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
		plain := encodeTreeGroup(leaves)
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
func (r *Repository) LoadTreeGroup(ctx context.Context, m *Manifest, g int) (*hashtree.SparseLeaves, error) {
	top, err := m.Tree.groupTop(g)
	if err != nil {
		return nil, err
	}
	bs := int(m.Tree.BlockSize)
	n := GroupLen(int64(m.Size), bs, g)
	leaves := hashtree.NewSparseLeaves(n, bs)
	if id := m.Tree.Groups[g]; !id.IsZero() {
		if leaves, err = r.readTreeGroup(ctx, r.idx, id, n, bs); err != nil {
			return nil, fmt.Errorf("manifest %v: tree group %d: %w", m.ID.Short(), g, err)
		}
	}
	if leaves.Top() != top {
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
func (t FullTree) GroupLeaves(g int) (*hashtree.SparseLeaves, error) {
	out := hashtree.NewSparseLeaves(GroupLen(t.Size(), t.BlockSize(), g), t.BlockSize())
	for i := range out.Len() {
		l, _ := t.Leaf(int64(g)*TreeGroupLeaves + int64(i))
		out.Set(i, l)
	}
	return out, nil
}

// GroupTop implements PointTree.
func (t FullTree) GroupTop(g int) hashtree.Hash {
	l, _ := t.GroupLeaves(g)
	return l.Top()
}

// indexedOrZero: a parent's group can be named again only if an index
// file still holds it (a pack lost, then repair index, drops it).
func (w *SnapshotWriter) indexedOrZero(id ID) bool {
	return id.IsZero() || w.r.idx.has(BlobPage, id)
}

// encodeTreeGroup is a group's blob (T1), nil if all its leaves are
// zero-block leaves (T2): version 2, the data leaves alone (T10), when
// that is the shorter, else version 1, every leaf.
func encodeTreeGroup(leaves *hashtree.SparseLeaves) []byte {
	k, n := leaves.DataLen(), leaves.Len()
	if k == 0 {
		return nil
	}
	if sparseGroupLen(k) >= denseGroupLen(n) {
		b := groupHeader(treeGroupDense, n, denseGroupLen(n))
		for _, l := range leaves.Dense() {
			b = append(b, l[:]...)
		}
		return b
	}
	b := groupHeader(treeGroupSparse, n, sparseGroupLen(k))
	b = binary.LittleEndian.AppendUint32(b, uint32(k))
	leaves.Data(func(i int, h hashtree.Hash) {
		b = binary.LittleEndian.AppendUint16(b, uint16(i))
		b = append(b, h[:]...)
	})
	return b
}

func denseGroupLen(n int) int  { return 9 + 32*n }
func sparseGroupLen(k int) int { return 13 + 34*k }

func groupHeader(version byte, n, size int) []byte {
	b := make([]byte, 9, size)
	copy(b, treeGroupMagic)
	b[4] = version
	binary.LittleEndian.PutUint32(b[5:], uint32(n))
	return b
}

// decodeTreeGroup checks a group blob (T1, T10) of want leaves of
// blockSize and returns its leaves, sparse.
func decodeTreeGroup(b []byte, want, blockSize int) (*hashtree.SparseLeaves, error) {
	if len(b) < 9 || !bytes.Equal(b[:4], []byte(treeGroupMagic)) {
		return nil, fmt.Errorf("tree group: bad header: %w", ErrCorrupt)
	}
	n := int(binary.LittleEndian.Uint32(b[5:]))
	if n != want || want < 1 || want > TreeGroupLeaves {
		return nil, fmt.Errorf("tree group: %d leaves, want %d: %w", n, want, ErrCorrupt)
	}
	switch b[4] {
	case treeGroupDense:
		return decodeDenseGroup(b[9:], n, blockSize)
	case treeGroupSparse:
		return decodeSparseGroup(b[9:], n, blockSize)
	}
	return nil, fmt.Errorf("tree group: version %d: %w", b[4], ErrCorrupt)
}

// decodeDenseGroup reads version 1's n leaves, keeping the data leaves.
func decodeDenseGroup(raw []byte, n, blockSize int) (*hashtree.SparseLeaves, error) {
	if len(raw) != 32*n {
		return nil, fmt.Errorf("tree group: %d bytes for %d leaves: %w", len(raw), n, ErrCorrupt)
	}
	out := hashtree.NewSparseLeaves(n, blockSize)
	var h hashtree.Hash
	for i := range n {
		copy(h[:], raw[32*i:])
		out.Set(i, h)
	}
	return out, nil
}

// decodeSparseGroup reads version 2's data leaves (T10): k >= 1 records,
// offsets strictly increasing below n, no zero-block leaf, nothing more.
func decodeSparseGroup(raw []byte, n, blockSize int) (*hashtree.SparseLeaves, error) {
	if len(raw) < 4 {
		return nil, fmt.Errorf("tree group: no leaf count: %w", ErrCorrupt)
	}
	k := int(binary.LittleEndian.Uint32(raw))
	raw = raw[4:]
	if k < 1 || k > n || len(raw) != 34*k {
		return nil, fmt.Errorf("tree group: %d data leaves in %d bytes of a group of %d: %w", k, len(raw), n, ErrCorrupt)
	}
	out := hashtree.NewSparseLeaves(n, blockSize)
	zero, last := hashtree.ZeroLeaf(blockSize), -1
	var h hashtree.Hash
	for r := range k {
		i := int(binary.LittleEndian.Uint16(raw[34*r:]))
		copy(h[:], raw[34*r+2:])
		if i <= last || i >= n || h == zero {
			return nil, fmt.Errorf("tree group: data leaf %d at offset %d after %d of %d, or a zero-block leaf: %w", r, i, last, n, ErrCorrupt)
		}
		out.Set(i, h)
		last = i
	}
	return out, nil
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

// readTreeGroup loads group blob id of n leaves of blockSize (T1, T10).
func (r *Repository) readTreeGroup(ctx context.Context, x *index, id ID, n, blockSize int) (*hashtree.SparseLeaves, error) {
	plain, err := r.loadBlobFrom(ctx, x, BlobPage, id)
	if err != nil {
		return nil, err
	}
	leaves, err := decodeTreeGroup(plain, n, blockSize)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", id.Short(), err)
	}
	return leaves, nil
}

// loadTreeGroup sets group g's data leaves in t, whose leaves are all
// zero-block leaves until then: the leaves a group does not list are.
func (r *Repository) loadTreeGroup(ctx context.Context, x *index, t *hashtree.Tree, g int, id ID) error {
	n := int(min(t.Leaves()-int64(g)*TreeGroupLeaves, TreeGroupLeaves))
	leaves, err := r.readTreeGroup(ctx, x, id, n, t.BlockSize())
	if err != nil {
		return fmt.Errorf("tree group %d: %w", g, err)
	}
	first := int64(g) * TreeGroupLeaves
	leaves.Data(func(i int, h hashtree.Hash) {
		if err == nil {
			err = t.Set(first+int64(i), h)
		}
	})
	if err != nil {
		return fmt.Errorf("tree group %d: %v: %w", g, err, ErrCorrupt)
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

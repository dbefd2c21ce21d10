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

// TreeChange says which leaf groups of a new point's tree may differ
// from its parent's: the others keep the parent's blob IDs (T3).
type TreeChange func(group int) bool

// SetTree gives the writer the point's tree, which Commit stores (T1–T3).
// changed says which groups differ from the parent's tree; nil: all may.
func (w *SnapshotWriter) SetTree(t *hashtree.Tree, proven bool, changed TreeChange) error {
	if t.Size() != int64(w.meta.Size) {
		return fmt.Errorf("repo: tree of %d bytes for an image of %d: %w", t.Size(), w.meta.Size, ErrInvalid)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tree, w.treeProven, w.treeChanged = t, proven, changed
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
	n := int((t.Leaves() + TreeGroupLeaves - 1) / TreeGroupLeaves)
	ref.Groups = make([]ID, n)
	var old *TreeRef
	if w.parent != nil && w.parent.Tree != nil && w.parent.Tree.BlockSize == ref.BlockSize && w.parent.Size == w.meta.Size {
		old = w.parent.Tree
	}
	for g := range n {
		if old != nil && w.treeChanged != nil && !w.treeChanged(g) && w.indexedOrZero(old.Groups[g]) {
			ref.Groups[g] = old.Groups[g] // T3
			continue
		}
		plain := encodeTreeGroup(t, g)
		if plain == nil {
			continue // T2
		}
		id := w.r.crypt.blobID(plain)
		if err := w.store(ctx, BlobPage, id, plain); err != nil {
			return nil, err
		}
		ref.Groups[g] = id
	}
	return ref, nil
}

// indexedOrZero: a parent's group can be named again only if an index
// file still holds it (a pack lost, then repair index, drops it).
func (w *SnapshotWriter) indexedOrZero(id ID) bool {
	return id.IsZero() || w.r.idx.has(BlobPage, id)
}

// encodeTreeGroup is group g's blob (T1), nil if all its leaves are
// zero-block leaves.
func encodeTreeGroup(t *hashtree.Tree, g int) []byte {
	first := g * (TreeGroupLeaves / hashtree.PageLeaves)
	last := min(first+TreeGroupLeaves/hashtree.PageLeaves, t.PageCount())
	zero := hashtree.ZeroLeaf(t.BlockSize())
	n := int(min(t.Leaves()-int64(g)*TreeGroupLeaves, TreeGroupLeaves))
	b := make([]byte, 9, 9+32*n)
	copy(b, treeGroupMagic)
	b[4] = 1
	binary.LittleEndian.PutUint32(b[5:], uint32(n))
	stored := false
	for p := first; p < last; p++ {
		leaves := t.PageLeavesOf(p)
		stored = stored || leaves != nil
		for i := range min(hashtree.PageLeaves, n-(p-first)*hashtree.PageLeaves) {
			if leaves == nil {
				b = append(b, zero[:]...)
			} else {
				b = append(b, leaves[i][:]...)
			}
		}
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
	return t, nil
}

func (r *Repository) loadTreeGroup(ctx context.Context, x *index, t *hashtree.Tree, g int, id ID) error {
	plain, err := r.loadBlobFrom(ctx, x, BlobPage, id)
	if err != nil {
		return err
	}
	n := int(min(t.Leaves()-int64(g)*TreeGroupLeaves, TreeGroupLeaves))
	raw, err := decodeTreeGroup(plain, n)
	if err != nil {
		return fmt.Errorf("tree group %d (%v): %w", g, id.Short(), err)
	}
	leaves := make([]hashtree.Hash, n)
	for i := range leaves {
		copy(leaves[i][:], raw[32*i:])
	}
	first := g * (TreeGroupLeaves / hashtree.PageLeaves)
	for p := 0; p*hashtree.PageLeaves < n; p++ {
		if err := t.SetPage(first+p, leaves[p*hashtree.PageLeaves:min((p+1)*hashtree.PageLeaves, n)]); err != nil {
			return fmt.Errorf("tree group %d: %v: %w", g, err, ErrCorrupt)
		}
	}
	return nil
}

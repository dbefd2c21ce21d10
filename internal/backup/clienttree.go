package backup

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// ErrNoHostTree: the host keeps no hash tree of the disk (tree off, CBT
// off, or a host that has none). A RootHost MUST wrap it then: the
// backup still computes and stores its point's root, marked not proven.
var ErrNoHostTree = errors.New("the host keeps no hash tree of this disk")

var (
	_ RootHost = ClientHost{}
	_ LeafHost = ClientHost{}
)

// SnapshotRoot implements RootHost, waiting while the host computes it.
func (h ClientHost) SnapshotRoot(ctx context.Context, disk, snap string) (hashtree.Hash, int, error) {
	r, err := h.C.SnapshotRoot(ctx, disk, snap)
	if errors.Is(err, client.ErrNoTree) {
		return hashtree.Hash{}, 0, fmt.Errorf("%w: %w", ErrNoHostTree, err)
	} else if err != nil {
		return hashtree.Hash{}, 0, err
	}
	root, err := parseHash(r.Root)
	return root, r.BlockSize, err
}

// SnapshotLeaves implements LeafHost from the leaves of every allocated
// area (changes since "*", leaves=true); unallocated blocks are holes,
// whose leaf is the zero block's.
func (h ClientHost) SnapshotLeaves(ctx context.Context, disk, snap string, first, n int64) ([]hashtree.Hash, error) {
	r, err := h.C.SnapshotRoot(ctx, disk, snap)
	if err != nil {
		return nil, err
	}
	bs := int64(r.BlockSize)
	out := make([]hashtree.Hash, n)
	for i := range out {
		out[i] = hashtree.ZeroLeaf(int(bs))
	}
	for off := first * bs; off < min((first+n)*bs, r.Size); {
		ca, err := h.C.QueryChangedAreasLeaves(ctx, disk, snap, "*", off)
		if err != nil {
			return nil, err
		}
		if ca.Length <= 0 || len(ca.Leaves) != len(ca.ChangedArea) {
			return nil, fmt.Errorf("host returned a bad page of leaves at %d", off)
		}
		for i, a := range ca.ChangedArea {
			for k, s := range ca.Leaves[i] {
				if j := a.Start/bs + int64(k) - first; j >= 0 && j < n {
					if out[j], err = parseHash(s); err != nil {
						return nil, err
					}
				}
			}
		}
		off = ca.StartOffset + ca.Length
	}
	return out, nil
}

func parseHash(s string) (hashtree.Hash, error) {
	var h hashtree.Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("host sent a bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

package disk

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// SnapshotTree returns snapshot id's hash tree and root, waiting while it
// is computed until ctx ends (then ErrTreePending). The tree is shared
// and read-only: use Leaf only. A disk without trees answers ErrNoTree.
func (d *Disk) SnapshotTree(ctx context.Context, id string) (*hashtree.Tree, hashtree.Hash, error) {
	return nil, hashtree.Hash{}, fmt.Errorf("snapshot %s: %w", id, ErrNoTree)
}

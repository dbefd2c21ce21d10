package api

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// maxTreeWait caps the wait= of a tree request, so one never pins a
// connection for long; the client asks again.
const maxTreeWait = 60 * time.Second

// snapshotTree waits up to wait= (at most maxTreeWait) for the
// snapshot's hash tree.
func (s *Server) snapshotTree(r *http.Request, d *disk.Disk, name, snap string) (*hashtree.Tree, hashtree.Hash, error) {
	wait, err := waitParam(r)
	if err != nil {
		return nil, hashtree.Hash{}, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(wait, maxTreeWait))
	defer cancel()
	t, root, err := d.SnapshotTree(ctx, snap)
	if err != nil {
		return nil, root, snapErr(fmt.Errorf("disk %s@%s: %w", name, snap, err))
	}
	return t, root, nil
}

// snapshotRoot answers the snapshot's hash-tree root, waiting up to
// wait= while the host computes it.
func (s *Server) snapshotRoot(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	t, root, err := s.snapshotTree(r, d, name, r.PathValue("snap"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, wire.SnapshotRoot{Root: hex.EncodeToString(root[:]), BlockSize: t.BlockSize(), Size: t.Size()}, nil
}

// addLeaves gives each area the leaves of the tree blocks it covers.
func addLeaves(ca *wire.ChangedAreas, t *hashtree.Tree) error {
	bs := int64(t.BlockSize())
	ca.Leaves = make([][]string, len(ca.ChangedArea))
	for i, a := range ca.ChangedArea {
		first, end := a.Start/bs, (a.Start+a.Length+bs-1)/bs
		ls := make([]string, 0, end-first)
		for b := first; b < end; b++ {
			l, err := t.Leaf(b)
			if err != nil {
				return err
			}
			ls = append(ls, hex.EncodeToString(l[:]))
		}
		ca.Leaves[i] = ls
	}
	return nil
}

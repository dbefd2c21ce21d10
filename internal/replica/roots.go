package replica

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// Hash-tree roots of replication (docs/replication.md R10, R11): the
// source ships its snapshots' roots with the commit, the target proves
// its point against them; seeding compares leaves, not data read whole.

// sourceRoots are the roots of the cycle's source snapshots by target
// disk name, waiting for the host to compute them; a disk without a tree
// is left out (its point is not proven).
func (g *group) sourceRoots(ctx context.Context, in *inflight) (map[string]wire.TreeRoot, error) {
	out := map[string]wire.TreeRoot{}
	for _, rd := range g.st.Config.Disks {
		d, err := g.svc.h.Disk(rd.Source)
		if err != nil {
			return nil, err
		}
		t, root, err := d.SnapshotTree(ctx, snapName(g.st.Config.Name, in.Seq))
		if errors.Is(err, disk.ErrNoTree) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", rd.Source, err)
		}
		out[rd.Target] = wire.TreeRoot{Root: hex.EncodeToString(root[:]), BlockSize: t.BlockSize()}
	}
	return out, nil
}

// pointRoot is the root of snapshot snap of d with leaves of bs bytes:
// from the engine's tree, or, when the disk keeps none or another block
// size, built from the snapshot's image (read whole).
func pointRoot(ctx context.Context, d *disk.Disk, snap string, bs int) (string, error) {
	t, root, err := d.SnapshotTree(ctx, snap)
	if err != nil && !errors.Is(err, disk.ErrNoTree) {
		return "", err
	}
	if err == nil && t.BlockSize() == bs {
		return hex.EncodeToString(root[:]), nil
	}
	s, err := d.OpenSnapshot(snap)
	if err != nil {
		return "", err
	}
	defer s.Close()
	bt, err := hashtree.Build(ctx, s, s.Size(), bs, 2)
	if err != nil {
		return "", err
	}
	r := bt.Root()
	return hex.EncodeToString(r[:]), nil
}

// verifyRoots compares every disk's point snapshot with the source's root.
func (t *target) verifyRoots(ctx context.Context, p wire.ReplicationPoint, roots map[string]wire.TreeRoot) error {
	for name, want := range roots {
		snap, ok := p.Snapshots[name]
		if !ok {
			return fmt.Errorf("%w: root for disk %s, which is not in the point", ErrInvalid, name)
		}
		d, err := t.h.Disk(name)
		if err != nil {
			return err
		}
		got, err := pointRoot(ctx, d, snap, want.BlockSize)
		if err != nil {
			return fmt.Errorf("disk %s: root of %s: %w", name, snap, err)
		}
		if got != want.Root {
			return fmt.Errorf("%w: disk %s point %s has root %s, the source's snapshot %s", ErrRootMismatch, name, snap, got, want.Root)
		}
	}
	return nil
}

// refusePoint undoes a commit whose roots differ: the point's snapshots
// go, the staging is dropped (the source's next begin stages the cycle
// from zero and resends it whole: R2), and the mismatch is counted.
func (t *target) refusePoint(ctx context.Context, st *replicaState, p wire.ReplicationPoint, cause error) error {
	for name, id := range p.Snapshots {
		if d, err := t.h.Disk(name); err == nil {
			deleteSnap(ctx, d, id)
		}
	}
	st.Staging = nil
	delete(t.progress, st.Group)
	t.mm.Lock()
	t.mismatches[st.Group]++
	t.mm.Unlock()
	return errors.Join(cause, t.save(st))
}

// treeLeaves answers the leaves of the replica's last point's tree for
// [Offset, Offset+Length) (seeding): no data is read.
func treeLeaves(ctx context.Context, d *disk.Disk, snap string, req wire.ChecksumsRequest) ([]string, error) {
	t, _, err := d.SnapshotTree(ctx, snap)
	if err != nil {
		return nil, err
	}
	bs := int64(t.BlockSize())
	if req.BlockSize != bs || req.Offset%bs != 0 || req.Offset < 0 || req.Length < 0 ||
		req.Offset+req.Length > t.Size() || req.Length/bs > maxSums {
		return nil, fmt.Errorf("%w: leaves of [%d, +%d) in %d-byte blocks, the tree's are %d", disk.ErrNoTree, req.Offset, req.Length, req.BlockSize, bs)
	}
	var out []string
	for b := req.Offset / bs; b*bs < req.Offset+req.Length; b++ {
		l, err := t.Leaf(b)
		if err != nil {
			return nil, err
		}
		out = append(out, hex.EncodeToString(l[:]))
	}
	return out, nil
}

// seedLeaves compares the snapshot's leaves with the target's point's
// (R11): the areas of the blocks whose leaves differ. ok is false when
// either side has no tree of the same block size: then sums are compared.
func (g *group) seedLeaves(ctx context.Context, s *disk.Snapshot, rd wire.ReplicationDisk, from int64) ([]wire.Area, bool, error) {
	d, err := g.svc.h.Disk(rd.Source)
	if err != nil {
		return nil, false, err
	}
	mine, _, err := d.SnapshotTree(ctx, s.Info().ID)
	if errors.Is(err, disk.ErrNoTree) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	bs := int64(mine.BlockSize())
	var out []wire.Area
	for off := from / bs * bs; off < s.Size(); off += bs * maxSums {
		n := min(bs*maxSums, s.Size()-off)
		theirs, err := g.peer.Checksums(ctx, g.st.Config.Name, rd.Target, wire.ChecksumsRequest{Offset: off, Length: n, BlockSize: bs, Tree: true})
		if err != nil {
			return nil, false, nil // an older target, or no tree there: sums
		}
		for i := int64(0); i*bs < n; i++ {
			l, _ := mine.Leaf(off/bs + i)
			if i >= int64(len(theirs.Sums)) || hex.EncodeToString(l[:]) != theirs.Sums[i] {
				a := off + i*bs
				out = union(out, []wire.Area{{Start: a, Length: min(bs, s.Size()-a)}})
			}
		}
	}
	return out, true, nil
}

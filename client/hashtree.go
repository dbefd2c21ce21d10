package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// rootWait is how long one root request asks the host to wait; the host
// caps it at 60 s.
const rootWait = 30 * time.Second

// SnapshotRoot returns the hash-tree root of a snapshot's image
// (docs/format.md H3), waiting while the host still computes it (after
// the snapshot, or rebuilding it after a crash) until ctx ends. A disk
// that keeps no tree is ErrNoTree.
func (c *Client) SnapshotRoot(ctx context.Context, diskName, snapshot string) (SnapshotRoot, error) {
	for {
		r, err := c.snapshotRootOnce(ctx, diskName, snapshot, rootWait)
		if !errors.Is(err, ErrTreePending) {
			return r, err
		}
		if ctx.Err() != nil {
			return SnapshotRoot{}, err
		}
	}
}

// snapshotRootOnce asks once, the host waiting up to wait.
func (c *Client) snapshotRootOnce(ctx context.Context, diskName, snapshot string, wait time.Duration) (SnapshotRoot, error) {
	var out SnapshotRoot
	p := "/v1/disks/" + esc(diskName) + "/snapshots/" + esc(snapshot) + "/root?wait=" + url.QueryEscape(wait.String())
	return out, c.do(ctx, "GET", p, nil, &out)
}

// QueryChangedAreasLeaves is QueryChangedAreas with each area's
// hash-tree leaves (ChangedAreas.Leaves[i], one per tree block area i
// covers).
// The tree must be ready: call SnapshotRoot first, or get ErrTreePending.
func (c *Client) QueryChangedAreasLeaves(ctx context.Context, diskName, snapshot, changeID string, startOffset int64) (*ChangedAreas, error) {
	q := url.Values{"snapshot": {snapshot}, "changeId": {changeID},
		"startOffset": {strconv.FormatInt(startOffset, 10)}, "leaves": {"true"}}
	var out ChangedAreas
	return &out, c.do(ctx, "GET", "/v1/disks/"+esc(diskName)+"/changes?"+q.Encode(), nil, &out)
}

// AllChangedAreasLeaves waits for the snapshot's tree (SnapshotRoot),
// then pages through QueryChangedAreasLeaves up to the snapshot's size.
// It returns the root with the areas and their leaves (leaves[i] for
// areas[i]), so a caller checks the leaves against the root they came
// from.
func (c *Client) AllChangedAreasLeaves(ctx context.Context, diskName, snapshot, changeID string) (SnapshotRoot, []Area, [][]string, error) {
	root, err := c.SnapshotRoot(ctx, diskName, snapshot)
	if err != nil {
		return root, nil, nil, err
	}
	var leaves [][]string
	areas, err := c.pageAreas(ctx, diskName, snapshot, root.Size, func(off int64) (*ChangedAreas, error) {
		ca, err := c.QueryChangedAreasLeaves(ctx, diskName, snapshot, changeID, off)
		if err == nil && len(ca.Leaves) != len(ca.ChangedArea) {
			err = fmt.Errorf("changes of %s@%s: host sent %d leaf lists for %d areas", diskName, snapshot, len(ca.Leaves), len(ca.ChangedArea))
		}
		if err == nil {
			leaves = append(leaves, ca.Leaves...)
		}
		return ca, err
	})
	return root, areas, leaves, err
}

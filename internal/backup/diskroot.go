package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/repo"
)

// proveDiskRoot checks a disk that a partial restore (a rollback, or the
// fill of a clone restore) wrote back to a point: a snapshot taken after
// the writes must have the point's root by the host's own hash tree
// (docs/repository.md T5, for what a partial restore cannot hash on the
// target). The host rehashes only what changed since the snapshot the
// rollback asked CBT with, whose tree it kept (docs/format.md T2, T6),
// so the check costs about what was written. A point without a root, or
// a host without trees, leaves it unchecked (RootVerified false).
func proveDiskRoot(ctx context.Context, host Host, disk string, m *repo.Manifest, res *RestoreResult) (err error) {
	rh, ok := host.(RootHost)
	if !ok || m.Tree == nil {
		return nil
	}
	want, err := m.Tree.RootHash()
	if err != nil {
		return err
	}
	o := Options{Host: host, Disk: disk}
	snap, err := createSnapshot(ctx, o)
	if err != nil {
		return fmt.Errorf("snapshot %s to check its root: %w", disk, err)
	}
	defer func() {
		if derr := deleteSnapshot(context.WithoutCancel(ctx), o, snap.ID); derr != nil && err == nil {
			err = fmt.Errorf("delete snapshot %s: %w", snap.ID, derr)
		}
	}()
	got, bs, err := rh.SnapshotRoot(ctx, disk, snap.ID)
	switch {
	case errors.Is(err, ErrNoHostTree):
		return nil
	case err != nil:
		return fmt.Errorf("root of %s after the restore: %w", disk, err)
	case bs != int(m.Tree.BlockSize):
		return nil // another leaf size: the roots are not comparable
	case got != want:
		return fmt.Errorf("%w: disk %s after the restore has root %x, the point %s %x", ErrRootMismatch, disk, got[:8], m.ID.Short(), want[:8])
	}
	res.RootVerified = true
	return nil
}

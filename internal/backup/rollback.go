package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/repo"
)

// ErrNotThisDisk: a rollback names a disk that is not the one the
// restore point was taken of (another identity), or that one resized
// since.
var ErrNotThisDisk = errors.New("not the disk the restore point was taken of")

// RollbackOptions roll a disk back to one of its own restore points.
type RollbackOptions struct {
	Host     Host
	Disk     string
	Repo     *repo.Repository
	Manifest repo.ID
	// Target writes into the disk itself (its live NBD export). Nothing
	// else may write to the disk meanwhile: stop its VM first.
	Target  Target
	Workers int
	// ReadBack reads back every written chunk and then proves the disk
	// whole: a snapshot taken after the writes has the point's root
	// (proveDiskRoot).
	ReadBack bool
	Progress func(done, total int64)
	// noProve: the caller proves the disk Target wrote (a clone restore,
	// whose target is another disk than Disk) once the target is closed.
	noProve bool
}

// RollbackResult describes a finished rollback.
type RollbackResult struct {
	*RestoreResult
	// ChangedBytes is what CBT reported changed since the point: the
	// only areas written.
	ChangedBytes int64
}

// Rollback returns a disk to a restore point taken of it by writing back
// only what changed since (VMware's quick rollback): a snapshot fixes the
// present, CBT says which areas differ from the point's change ID, the
// snapshot goes, and the point's chunks for those areas are written over
// the disk, each verified against its hash. Unchanged areas already hold
// the point's bytes. When CBT cannot answer (its history was reset or the
// change ID expired) it refuses with ErrChangeIDInvalid: restore the whole
// point into the disk instead.
func Rollback(ctx context.Context, o RollbackOptions) (*RollbackResult, error) {
	m, err := o.Repo.LoadManifest(ctx, o.Manifest)
	if err != nil {
		return nil, err
	}
	info, err := o.Host.Disk(ctx, o.Disk)
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", o.Disk, err)
	}
	switch {
	case info.UUID != m.DiskUUID:
		return nil, fmt.Errorf("rollback %s (uuid %s) to %s (of uuid %s): %w", o.Disk, info.UUID, m.ID.Short(), m.DiskUUID, ErrNotThisDisk)
	case info.Size != int64(m.Size):
		// CBT does not cover a resize; a whole restore does.
		return nil, fmt.Errorf("rollback %s to %s: the disk has %d bytes, the point %d (resized since): %w; restore the point whole",
			o.Disk, m.ID.Short(), info.Size, m.Size, ErrNotThisDisk)
	}
	ho := Options{Host: o.Host, Disk: o.Disk}
	removeStale(ctx, ho) // snapshots of killed backups and rollbacks
	areas, err := changedSince(ctx, ho, m.ChangeID)
	if err != nil {
		return nil, fmt.Errorf("rollback %s to %s: %w", o.Disk, m.ID.Short(), err)
	}
	res := &RollbackResult{}
	for _, a := range areas {
		res.ChangedBytes += a.Length
	}
	res.RestoreResult, err = Restore(ctx, RestoreOptions{Repo: o.Repo, Manifest: m.ID, Target: o.Target,
		Workers: o.Workers, ReadBack: o.ReadBack, Progress: o.Progress, Partial: true, Areas: areas})
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", o.Disk, err)
	}
	if o.ReadBack && !o.noProve {
		if err := proveDiskRoot(ctx, o.Host, o.Disk, m, res.RestoreResult); err != nil {
			return nil, fmt.Errorf("rollback %s: %w", o.Disk, err)
		}
	}
	return res, nil
}

// changedSince is what changed on the disk since changeID, through a
// snapshot taken and deleted for the question.
func changedSince(ctx context.Context, o Options, changeID string) (areas []Area, err error) {
	if changeID == "" {
		return nil, fmt.Errorf("the restore point has no change ID: %w", ErrChangeIDInvalid)
	}
	snap, err := createSnapshot(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		if derr := deleteSnapshot(context.WithoutCancel(ctx), o, snap.ID); derr != nil && err == nil {
			err = fmt.Errorf("delete snapshot %s: %w", snap.ID, derr)
		}
	}()
	return allAreas(ctx, o, snap, changeID)
}

package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/repo"
)

// Cloner is a Host that can make a full clone of a disk inside its
// datastore (the data mover), as ClientHost does through the API.
type Cloner interface {
	Host
	// CloneDisk makes disk dst a full, point-in-time copy of the live
	// disk src without moving its bytes through the caller.
	CloneDisk(ctx context.Context, src, dst string) error
	// DeleteDisk removes a disk.
	DeleteDisk(ctx context.Context, name string) error
}

// CloneDisk implements Cloner.
func (h ClientHost) CloneDisk(ctx context.Context, src, dst string) error {
	_, err := h.C.CloneDisk(ctx, src, client.CloneRequest{Name: dst})
	return err
}

// DeleteDisk implements Cloner.
func (h ClientHost) DeleteDisk(ctx context.Context, name string) error {
	return h.C.DeleteDisk(ctx, name)
}

// CloneRestoreOptions configure RestoreByClone.
type CloneRestoreOptions struct {
	Host     Cloner
	Repo     *repo.Repository
	Manifest repo.ID
	// ToDisk is the new disk to restore into.
	ToDisk string
	// OpenTarget opens the new disk for writing once it exists, and
	// returns how to close it.
	OpenTarget func(ctx context.Context) (Target, func() error, error)
	Workers    int
	ReadBack   bool
	Progress   func(done, total int64)
}

// ErrNoCloneBase: the point's disk is not on the host (or not the same
// disk, or resized, or the point has no change ID): RestoreByClone did
// nothing and the caller restores the point whole.
var ErrNoCloneBase = errors.New("the point's disk is not on this host to clone from")

// RestoreByClone restores a point into a new disk on the host that still
// holds the point's disk: the host clones that disk inside its datastore
// (reflink or copy_file_range, no bytes through the caller), then only
// the areas CBT reports changed since the point are written from the
// repository, each chunk checked against its hash (as Rollback does on
// the disk itself). It returns ErrNoCloneBase, having changed nothing,
// when the point's disk cannot serve as the base; a clone that cannot be
// offloaded (client.ErrNotSupported) is ErrNoCloneBase too. If CBT cannot
// answer after the clone was made, the whole point is restored into it.
func RestoreByClone(ctx context.Context, o CloneRestoreOptions) (*RollbackResult, error) {
	m, err := o.Repo.LoadManifest(ctx, o.Manifest)
	if err != nil {
		return nil, err
	}
	info, err := o.Host.Disk(ctx, m.Disk)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrNoCloneBase, err)
	case info.UUID != m.DiskUUID || info.Size != int64(m.Size) || m.ChangeID == "":
		return nil, fmt.Errorf("%w: disk %s is not the point's (or was resized)", ErrNoCloneBase, m.Disk)
	}
	if err := o.Host.CloneDisk(ctx, m.Disk, o.ToDisk); err != nil {
		if errors.Is(err, client.ErrNotSupported) {
			return nil, fmt.Errorf("%w: %v", ErrNoCloneBase, err)
		}
		return nil, fmt.Errorf("clone %s to %s: %w", m.Disk, o.ToDisk, err)
	}
	res, err := o.fill(ctx, m)
	if err != nil {
		// Nothing half-restored stays behind under the disk's name.
		if derr := o.Host.DeleteDisk(context.WithoutCancel(ctx), o.ToDisk); derr != nil {
			err = fmt.Errorf("%w (and removing %s: %v)", err, o.ToDisk, derr)
		}
	}
	return res, err
}

// fill writes the point's data that differs from the clone into it.
func (o CloneRestoreOptions) fill(ctx context.Context, m *repo.Manifest) (*RollbackResult, error) {
	t, closeTarget, err := o.OpenTarget(ctx)
	if err != nil {
		return nil, err
	}
	res, err := Rollback(ctx, RollbackOptions{Host: o.Host, Disk: m.Disk, Repo: o.Repo, Manifest: m.ID,
		Target: t, Workers: o.Workers, ReadBack: o.ReadBack, Progress: o.Progress, noProve: true})
	if errors.Is(err, ErrChangeIDInvalid) || errors.Is(err, ErrNotThisDisk) {
		var r *RestoreResult
		if r, err = Restore(ctx, RestoreOptions{Repo: o.Repo, Manifest: m.ID, Target: t,
			Workers: o.Workers, ReadBack: o.ReadBack, Progress: o.Progress}); err == nil {
			res = &RollbackResult{RestoreResult: r, ChangedBytes: int64(m.Size)}
		}
	}
	if cerr := closeTarget(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", o.ToDisk, cerr)
	}
	if err != nil {
		return nil, err
	}
	if o.ReadBack && !res.RootVerified { // a whole restore hashed its target already
		if err := proveDiskRoot(ctx, o.Host, o.ToDisk, m, res.RestoreResult); err != nil {
			return nil, err
		}
	}
	return res, nil
}

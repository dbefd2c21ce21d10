package transport

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// sanSource reads a snapshot from the datastore's files.
type sanSource struct{ s *disk.DirectSnapshot }

var (
	_ Source        = (*sanSource)(nil)
	_ backup.Lender = (*sanSource)(nil)
)

// Mode is ModeSAN.
func (s sanSource) Mode() string { return ModeSAN }

// Size is the snapshot's size.
func (s sanSource) Size() int64 { return s.s.Size() }

// Close closes the layer files.
func (s sanSource) Close() error { return s.s.Close() }

// ReadAt reads the layer files; the direct reader checks disk.meta after.
func (s sanSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := s.s.ReadAt(p, off)
	return err
}

// Lend and Verify let a backup use the datastore's pages in place
// (backup.Lender); Verify is the snapshot's check that nothing changed.
func (s sanSource) Lend(off, n int64) (*fsutil.Mapping, error) { return s.s.Lend(off, n) }

// Verify reports whether the snapshot's layer files changed under the reader.
func (s sanSource) Verify() error { return s.s.Check() }

func openSAN(ctx context.Context, env Env, diskName, snap string) (Source, string, error) {
	if env.Datastore == "" {
		return nil, "", skip("no datastore directory given")
	}
	if err := CheckDatastore(ctx, env); err != nil {
		return nil, "", skip("%w", err)
	}
	ds, err := disk.OpenSnapshotDirect(env.Datastore, diskName, snap)
	if err != nil {
		return nil, "", skip("%w", err)
	}
	return sanSource{ds}, env.Datastore, nil
}

// CheckDatastore refuses a directory whose datastore.meta is not the
// host's: reading another datastore's files (a stale copy, another
// host's mount) would back up the wrong bytes without any error.
func CheckDatastore(ctx context.Context, env Env) error {
	local, err := disk.DatastoreID(env.Datastore)
	if err != nil {
		return fmt.Errorf("%w: %s is no datastore: %w", disk.ErrForeignDatastore, env.Datastore, err)
	}
	hi, err := env.Client.Host(ctx)
	if err != nil {
		return fmt.Errorf("asking the host for its datastore: %w", err)
	}
	if hi.DatastoreID != local {
		return fmt.Errorf("%w: %s has datastore id %s, the host's (%s) is %s",
			disk.ErrForeignDatastore, env.Datastore, local, hi.DatastorePath, hi.DatastoreID)
	}
	return nil
}

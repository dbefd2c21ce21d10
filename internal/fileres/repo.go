package fileres

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/repo"
)

// Session is a point opened for browsing: the tree, the Source it reads
// through, and the repository lock that keeps a prune from removing its
// packs while it is open.
type Session struct {
	*Point
	Source   *Source
	Manifest *repo.Manifest
	release  func() error
}

// OpenRepoPoint opens restore point id of r for browsing under a shared
// lock (as restore takes); every chunk read is verified against its ID.
// Close releases the lock.
func OpenRepoPoint(ctx context.Context, r *repo.Repository, id repo.ID, o SourceOptions) (*Session, error) {
	lock, err := r.LockRead(ctx)
	if err != nil {
		return nil, fmt.Errorf("fileres: %w", err)
	}
	release := lock.KeepFresh(ctx)
	im, err := r.OpenImage(ctx, id)
	if err != nil {
		release()
		return nil, err
	}
	src := NewSource(ctx, im, o)
	p, err := Open(ctx, src, src.Size(), im.Manifest().Time)
	if err != nil {
		release()
		return nil, err
	}
	return &Session{Point: p, Source: src, Manifest: im.Manifest(), release: release}, nil
}

// Close waits for the background loads and releases the repository lock.
func (s *Session) Close() error {
	s.Source.Wait()
	return s.release()
}

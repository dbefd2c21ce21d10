package scheduler

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/fileres"
)

// browseCache is the chunk cache of one file-browsing request.
const browseCache = 64 << 20

// OpenPoint implements api.PolicyPoints: a point of the policy's
// repository opened for browsing (the console's file browser), with the
// repository and key the scheduler holds, so no request derives a key.
func (s *Scheduler) OpenPoint(ctx context.Context, name, point string) (*fileres.Session, func(), error) {
	s.mu.Lock()
	rec := s.recs[name]
	s.mu.Unlock()
	if rec == nil {
		return nil, nil, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	r, err := s.repoFor(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	m, err := backup.FindPoint(ctx, r, point, "")
	if err != nil {
		return nil, nil, err
	}
	sess, err := fileres.OpenRepoPoint(ctx, r, m.ID, fileres.SourceOptions{CacheBytes: browseCache})
	if err != nil {
		return nil, nil, err
	}
	return sess, func() {}, nil // the repository stays the scheduler's
}

package scheduler

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/repo"
)

// browseCache is the chunk cache of one file-browsing session.
const browseCache = 64 << 20

// OpenPoint implements api.PolicyPoints: a point of the policy's
// repository opened for browsing (the console's file browser), with the
// repository and key the scheduler holds, so no request derives a key.
// The point is found again on each request (a forgotten one is gone),
// but its session is kept between requests (pointcache.go); done hands
// it back.
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
	p := s.points.take(name, m.ID)
	if p == nil {
		if p, err = s.openPoint(ctx, r, name, m); err != nil {
			return nil, nil, err
		}
	}
	return p.sess, func() {
		p.sess.Source.Wait() // the request's read-ahead, before the trim
		p.sess.Source.Trim(keptCacheBytes)
		s.points.put(p)
	}, nil
}

// openPoint opens a session of point m under the scheduler's context
// (it outlives the request; ctx bounds only the opening, which may wait
// for a prune's lock).
func (s *Scheduler) openPoint(ctx context.Context, r *repo.Repository, name string, m *repo.Manifest) (*idlePoint, error) {
	octx, cancel := context.WithCancel(s.ctx)
	stop := context.AfterFunc(ctx, cancel)
	s.pointOpens.Add(1)
	sess, err := fileres.OpenRepoPoint(octx, r, m.ID, fileres.SourceOptions{CacheBytes: browseCache})
	if !stop() { // the request ended while the point opened
		err = ctx.Err()
		if sess != nil {
			sess.Close()
		}
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return &idlePoint{policy: name, id: m.ID, sess: sess, close: func() { sess.Close(); cancel() }}, nil
}

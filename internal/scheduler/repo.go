package scheduler

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backend/location"
	"github.com/blockwise/blockwise/internal/repo"
)

// repoHandle is a policy's repository, opened once in the background:
// the key is derived then (Argon2id at the repository's own parameters,
// never weakened) and kept in memory with the open repository.
type repoHandle struct {
	done  chan struct{}
	r     *repo.Repository
	err   error
	at    time.Duration // how long opening (unlock + index) took
	close func() error
}

// openRepoLocked (s.mu held) starts opening the policy's repository
// unless a handle that did not fail exists.
func (s *Scheduler) openRepoLocked(name string) *repoHandle {
	if h := s.repos[name]; h != nil {
		select {
		case <-h.done:
			if h.err == nil {
				return h
			}
		default:
			return h
		}
	}
	p, sec := s.recs[name].Policy, s.secs[name]
	h := &repoHandle{done: make(chan struct{}), close: func() error { return nil }}
	s.repos[name] = h
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(h.done)
		start := time.Now()
		s.opens.Add(1)
		h.r, h.err = openRepo(s.ctx, p, sec)
		h.at = time.Since(start)
		// The key's derivation (Argon2id, 64 MiB at RFC 9106's strength)
		// left that much free heap, which the runtime gives back to the
		// OS only slowly: the host's RSS stayed ~65 MB higher for good.
		debug.FreeOSMemory()
		if h.err != nil {
			s.log.Error("scheduler: opening the repository", "policy", name, "repo", p.Repository.Location, "err", h.err)
			return
		}
		r := h.r
		h.close = r.Close
		s.remeasure(name)
		s.log.Info("scheduler: repository open, key held in memory", "policy", name, "took", h.at.Round(time.Millisecond))
	}()
	return h
}

// openRepo opens a policy's repository with its secrets; it waits out
// another process's lock for up to ten minutes.
func openRepo(ctx context.Context, p wire.Policy, sec secret) (*repo.Repository, error) {
	lo := location.Options{LimitUpload: p.LimitUploadKiB << 10, AccessKey: sec.AccessKey, SecretKey: sec.SecretKey}
	be, err := location.Open(ctx, p.Repository.Location, lo)
	if err != nil {
		return nil, err
	}
	r, err := repo.OpenWith(ctx, be, repo.Secret{Password: sec.Password}, repo.Options{})
	if err != nil {
		be.Close()
		return nil, err
	}
	r.SetLockWait(10 * time.Minute)
	return r, nil
}

// repoFor waits for the policy's repository (opening it again if the
// last attempt failed).
func (s *Scheduler) repoFor(ctx context.Context, name string) (*repo.Repository, error) {
	s.mu.Lock()
	if s.recs[name] == nil {
		s.mu.Unlock()
		return nil, context.Canceled
	}
	h := s.openRepoLocked(name)
	s.mu.Unlock()
	select {
	case <-h.done:
		return h.r, h.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// retireRepoLocked (s.mu held) drops the policy's handle; it is closed
// at Stop, since a job may still use it.
func (s *Scheduler) retireRepoLocked(name string) {
	s.points.drop(name, repo.ID{})
	if h := s.repos[name]; h != nil {
		s.retired = append(s.retired, h)
		delete(s.repos, name)
	}
}

// ready says whether the policy's key is held, or why not.
func (s *Scheduler) readyLocked(name string) (bool, string) {
	h := s.repos[name]
	if h == nil {
		return false, ""
	}
	select {
	case <-h.done:
		if h.err != nil {
			return false, h.err.Error()
		}
		return true, ""
	default:
		return false, ""
	}
}

func (h *repoHandle) closeRepo() error {
	<-h.done
	return h.close()
}

// Repository is the policy's repository, opened with the secrets the
// host keeps for it (the recovery service's points, so a request names
// the policy and never carries a password). The scheduler owns it: the
// caller must not close it.
func (s *Scheduler) Repository(ctx context.Context, name string) (*repo.Repository, error) {
	s.mu.Lock()
	rec := s.recs[name]
	s.mu.Unlock()
	if rec == nil {
		return nil, fmt.Errorf("%w: %s", api.ErrPolicyNotFound, name)
	}
	return s.repoFor(ctx, name)
}

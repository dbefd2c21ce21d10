package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/blockwise/blockwise/internal/fileres"
)

// PolicyPoints is what a Policies implementation offers when it can open
// the points of its policies' repositories for browsing (the scheduler
// does, with the repository and key it holds).
type PolicyPoints interface {
	// OpenPoint opens point (an ID or a prefix of one) of the policy's
	// repository; the caller calls done when it is finished with the
	// session (done closes it, or keeps it for the next request).
	OpenPoint(ctx context.Context, policy, point string) (s *fileres.Session, done func(), err error)
}

// policyFiles answers GET /v1/policies/{name}/points/{point}/files, the
// file route of a policy's point: the same answers as /v1/points/{point}/files
// (a listing, a file, a directory as tar or zip), from the policy's
// repository instead of serve --points-repo.
func (s *Server) policyFiles(w http.ResponseWriter, r *http.Request) {
	p, err := s.policiesOf()
	if err != nil {
		s.filesFailed(w, r, err)
		return
	}
	pp, ok := p.(PolicyPoints)
	if !ok {
		s.filesFailed(w, r, fmt.Errorf("%w: this host's policies serve no files", ErrPolicyNotFound))
		return
	}
	name := r.PathValue("name")
	s.filesOf(w, r, func(ctx context.Context, point string) (*fileres.Session, func(), error) {
		sess, done, err := pp.OpenPoint(ctx, name, point)
		return sess, done, policyProblem(err)
	})
}

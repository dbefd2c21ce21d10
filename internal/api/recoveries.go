package api

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	wire "github.com/blockwise/blockwise/api"
)

// Instant recoveries run by the host (/v1/recoveries): served like every
// route, on the trusted unix socket or over TCP with TLS and a token, and
// no request carries a secret: the point's repository is a policy's
// (credentials the host keeps) or the host's --points-repo, and the
// overlay and NBD socket live under the datastore (docs/overlay.md
// "Remote requests").

// Errors a Recoveries implementation wraps, mapped to problem documents.
var (
	// ErrRecoveryInvalid: a request that cannot be carried out as given
	// (a bad disk name, no point, a resume of another point or policy,
	// the host still starting).
	ErrRecoveryInvalid = errors.New("invalid recovery request")
	// ErrRecoveryExists: the target disk is being recovered, has a
	// stopped recovery (ask with resume), or exists already.
	ErrRecoveryExists = errors.New("recovery exists")
	// ErrRecoveryNotFound: a resume of a disk with no recovery, or a
	// request naming no policy to a host without --points-repo.
	ErrRecoveryNotFound = errors.New("no such recovery")
)

// Recoveries runs instant recoveries on the host as jobs
// (internal/recovery implements it; the daemon hands it over with
// SetRecoveries before serving).
type Recoveries interface {
	// Recover starts (or, with req.Resume, resumes) a recovery as a job
	// and returns once its export serves.
	Recover(ctx context.Context, req wire.RecoveryRequest) (wire.Recovery, error)
	// List is every recovery with a directory, running or resumable.
	List(ctx context.Context) ([]wire.Recovery, error)
}

type recoveriesHolder struct{ p atomic.Pointer[Recoveries] }

// SetRecoveries serves r at /v1/recoveries (before it, those routes
// answer 404: the host recovers no points).
func (s *Server) SetRecoveries(r Recoveries) { s.recoveries.p.Store(&r) }

func (s *Server) registerRecoveryRoutes() {
	s.route("GET /v1/recoveries", s.listRecoveries)
	s.route("POST /v1/recoveries", s.startRecovery)
}

// recoveriesOf is the service, or 404 before SetRecoveries.
func (s *Server) recoveriesOf() (Recoveries, error) {
	p := s.recoveries.p.Load()
	if p == nil {
		return nil, problem(http.StatusNotFound, wire.ProblemRecoveryNotFound, "this host runs no recoveries")
	}
	return *p, nil
}

// recoveryProblem maps a Recoveries error to its problem document (a
// point's errors as the file routes map them).
func recoveryProblem(err error) error {
	switch {
	case errors.Is(err, ErrRecoveryExists):
		return problem(http.StatusConflict, wire.ProblemRecoveryExists, err.Error())
	case errors.Is(err, ErrRecoveryNotFound):
		return problem(http.StatusNotFound, wire.ProblemRecoveryNotFound, err.Error())
	case errors.Is(err, ErrRecoveryInvalid):
		return badRequest(err.Error())
	case errors.Is(err, ErrPolicyNotFound):
		return problem(http.StatusNotFound, wire.ProblemPolicyNotFound, err.Error())
	}
	return pointProblem(err)
}

// listRecoveries answers GET /v1/recoveries.
func (s *Server) listRecoveries(r *http.Request) (int, any, error) {
	rs, err := s.recoveriesOf()
	if err != nil {
		return 0, nil, err
	}
	out, err := rs.List(r.Context())
	if err != nil {
		return 0, nil, recoveryProblem(err)
	}
	return http.StatusOK, out, nil
}

// startRecovery answers POST /v1/recoveries: 202 with the recovery once
// its export serves (the copy goes on in the job).
func (s *Server) startRecovery(r *http.Request) (int, any, error) {
	rs, err := s.recoveriesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.RecoveryRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	out, err := rs.Recover(r.Context(), req)
	if err != nil {
		return 0, nil, recoveryProblem(err)
	}
	return http.StatusAccepted, out, nil
}

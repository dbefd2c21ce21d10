package api

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	wire "github.com/blockwise/blockwise/api"
)

// Errors a Recoveries implementation wraps, mapped to problem documents.
var (
	ErrRecoveryInvalid  = errors.New("invalid recovery request")
	ErrRecoveryExists   = errors.New("recovery exists")
	ErrRecoveryNotFound = errors.New("no such recovery")
)

// Recoveries runs instant recoveries on the host as jobs
// (internal/recovery implements it; the daemon hands it over with
// SetRecoveries before serving).
type Recoveries interface {
	Recover(ctx context.Context, req wire.RecoveryRequest) (wire.Recovery, error)
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

func (s *Server) recoveriesOf() (Recoveries, error) {
	p := s.recoveries.p.Load()
	if p == nil {
		return nil, problem(http.StatusNotFound, wire.ProblemRecoveryNotFound, "this host runs no recoveries: start blockwise serve with --points-repo")
	}
	return *p, nil
}

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

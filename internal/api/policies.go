package api

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	wire "github.com/blockwise/blockwise/api"
)

// Errors a Policies implementation wraps, mapped to problem documents.
var (
	ErrPolicyNotFound = errors.New("policy not found")
	ErrPolicyExists   = errors.New("policy already exists")
	// ErrPolicyInvalid: a policy or run request that cannot be carried
	// out as given (a bad schedule, no sources, an unknown time zone).
	ErrPolicyInvalid = errors.New("invalid policy")
)

// Policies is the host's scheduler as /v1/policies sees it (the
// scheduler package implements it; the daemon hands it over with
// SetPolicies before serving).
type Policies interface {
	List(ctx context.Context) ([]wire.Policy, error)
	Get(ctx context.Context, name string) (wire.Policy, error)
	Create(ctx context.Context, p wire.Policy) (wire.Policy, error)
	// Update replaces the policy; secrets left empty keep their values.
	Update(ctx context.Context, name string, p wire.Policy) (wire.Policy, error)
	Delete(ctx context.Context, name string) error
	Run(ctx context.Context, name string, req wire.PolicyRunRequest) (wire.PolicyRun, error)
	// Restore restores a point of the policy's repository as a job.
	Restore(ctx context.Context, name string, req wire.RestoreRequest) (wire.PolicyRun, error)
	// ServePoint serves a point over NBD (instant recovery) as a job
	// that runs until it is canceled.
	ServePoint(ctx context.Context, name string, req wire.ServePointRequest) (wire.PolicyRun, error)
}

type policiesHolder struct{ p atomic.Pointer[Policies] }

// SetPolicies serves p at /v1/policies (before it, those routes answer
// 404: the host runs no policies).
func (s *Server) SetPolicies(p Policies) {
	s.policies.p.Store(&p)
	s.console.SetPolicies(p)
}

func (s *Server) policiesOf() (Policies, error) {
	p := s.policies.p.Load()
	if p == nil {
		return nil, problem(http.StatusNotFound, wire.ProblemPolicyNotFound, "this host runs no policies")
	}
	return *p, nil
}

func policyProblem(err error) error {
	switch {
	case errors.Is(err, ErrPolicyNotFound):
		return problem(http.StatusNotFound, wire.ProblemPolicyNotFound, err.Error())
	case errors.Is(err, ErrPolicyExists):
		return problem(http.StatusConflict, wire.ProblemPolicyExists, err.Error())
	case errors.Is(err, ErrPolicyInvalid):
		return badRequest(err.Error())
	}
	return err
}

func (s *Server) listPolicies(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	list, err := p.List(r.Context())
	if list == nil {
		list = []wire.Policy{}
	}
	return http.StatusOK, list, policyProblem(err)
}

func (s *Server) getPolicy(r *http.Request) (int, any, error) {
	return s.onPolicy(r, http.StatusOK, func(ctx context.Context, p Policies, name string) (any, error) { return p.Get(ctx, name) })
}

func (s *Server) createPolicy(r *http.Request) (int, any, error) {
	return policyBody(s, r, http.StatusCreated, false, func(p Policies, ctx context.Context, _ string, req wire.Policy) (wire.Policy, error) {
		return p.Create(ctx, req)
	})
}

func (s *Server) updatePolicy(r *http.Request) (int, any, error) {
	return policyBody(s, r, http.StatusOK, false, Policies.Update)
}

func (s *Server) deletePolicy(r *http.Request) (int, any, error) {
	return s.onPolicy(r, http.StatusNoContent, func(ctx context.Context, p Policies, name string) (any, error) { return nil, p.Delete(ctx, name) })
}

// runPolicy: the body is optional (a run of the backups).
func (s *Server) runPolicy(r *http.Request) (int, any, error) {
	return policyBody(s, r, http.StatusAccepted, true, Policies.Run)
}

func (s *Server) restorePoint(r *http.Request) (int, any, error) {
	return policyBody(s, r, http.StatusAccepted, false, Policies.Restore)
}

func (s *Server) servePoint(r *http.Request) (int, any, error) {
	return policyBody(s, r, http.StatusAccepted, false, Policies.ServePoint)
}

// onPolicy answers status and what fn returns for the policy named in
// the path, its errors as problems.
func (s *Server) onPolicy(r *http.Request, status int, fn func(ctx context.Context, p Policies, name string) (any, error)) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	v, err := fn(r.Context(), p, r.PathValue("name"))
	return status, v, policyProblem(err)
}

// policyBody is onPolicy with the request's body decoded as a Req
// (optional: an empty body is a zero Req); fn has the shape of the
// Policies methods that take one.
func policyBody[Req, Resp any](s *Server, r *http.Request, status int, optional bool,
	fn func(p Policies, ctx context.Context, name string, req Req) (Resp, error)) (int, any, error) {
	return s.onPolicy(r, status, func(ctx context.Context, p Policies, name string) (any, error) {
		var req Req
		if !optional || r.ContentLength != 0 {
			if err := decode(r, &req); err != nil {
				return nil, err
			}
		}
		return fn(p, ctx, name, req)
	})
}

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
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	pol, err := p.Get(r.Context(), r.PathValue("name"))
	return http.StatusOK, pol, policyProblem(err)
}

func (s *Server) createPolicy(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.Policy
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	pol, err := p.Create(r.Context(), req)
	return http.StatusCreated, pol, policyProblem(err)
}

func (s *Server) updatePolicy(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.Policy
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	pol, err := p.Update(r.Context(), r.PathValue("name"), req)
	return http.StatusOK, pol, policyProblem(err)
}

func (s *Server) deletePolicy(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, policyProblem(p.Delete(r.Context(), r.PathValue("name")))
}

func (s *Server) runPolicy(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.PolicyRunRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
	}
	run, err := p.Run(r.Context(), r.PathValue("name"), req)
	return http.StatusAccepted, run, policyProblem(err)
}

func (s *Server) restorePoint(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.RestoreRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	run, err := p.Restore(r.Context(), r.PathValue("name"), req)
	return http.StatusAccepted, run, policyProblem(err)
}

func (s *Server) servePoint(r *http.Request) (int, any, error) {
	p, err := s.policiesOf()
	if err != nil {
		return 0, nil, err
	}
	var req wire.ServePointRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	run, err := p.ServePoint(r.Context(), r.PathValue("name"), req)
	return http.StatusAccepted, run, policyProblem(err)
}

package client

import (
	"context"

	wire "github.com/blockwise/blockwise/api"
)

// Policy documents.
type (
	Policy           = wire.Policy
	PolicySources    = wire.PolicySources
	PolicyRepository = wire.PolicyRepository
	PolicyRetention  = wire.PolicyRetention
	PolicyQuiesce    = wire.PolicyQuiesce
	PolicyRun        = wire.PolicyRun
)

// ListPolicies lists the host's protection policies with their status.
func (c *Client) ListPolicies(ctx context.Context) ([]Policy, error) {
	return callList[Policy](ctx, c, "/v1/policies")
}

// Policy returns one policy with its status.
func (c *Client) Policy(ctx context.Context, name string) (*Policy, error) {
	return call[Policy](ctx, c, "GET", "/v1/policies/"+esc(name), nil)
}

// CreatePolicy creates a policy; its secrets go to the host's root-only
// credentials file and are never returned.
func (c *Client) CreatePolicy(ctx context.Context, p Policy) (*Policy, error) {
	return call[Policy](ctx, c, "POST", "/v1/policies", p)
}

// UpdatePolicy replaces a policy; secrets left empty keep their values.
func (c *Client) UpdatePolicy(ctx context.Context, name string, p Policy) (*Policy, error) {
	return call[Policy](ctx, c, "PUT", "/v1/policies/"+esc(name), p)
}

// DeletePolicy removes a policy (its running jobs go on).
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/policies/"+esc(name), nil, nil)
}

// RunPolicy runs a policy now: what is "backup" (or ""), "prune" or
// "check". It returns the jobs started.
func (c *Client) RunPolicy(ctx context.Context, name, what string) (*PolicyRun, error) {
	return call[PolicyRun](ctx, c, "POST", "/v1/policies/"+esc(name)+"/run", wire.PolicyRunRequest{What: what})
}

// RestorePoint restores a point of a policy's repository on the host, as
// a job (see api.RestoreRequest).
func (c *Client) RestorePoint(ctx context.Context, policy string, req wire.RestoreRequest) (*PolicyRun, error) {
	return call[PolicyRun](ctx, c, "POST", "/v1/policies/"+esc(policy)+"/restore", req)
}

// ConsoleLink makes a one-time login link to the host's web console.
func (c *Client) ConsoleLink(ctx context.Context) (*wire.ConsoleLink, error) {
	return call[wire.ConsoleLink](ctx, c, "POST", "/v1/console/links", nil)
}

// ServePoint serves a point of a policy's repository over NBD on the host
// (instant recovery), as a job that runs until canceled.
func (c *Client) ServePoint(ctx context.Context, policy, point string) (*PolicyRun, error) {
	return call[PolicyRun](ctx, c, "POST", "/v1/policies/"+esc(policy)+"/serve-point", wire.ServePointRequest{Point: point})
}

package client

import (
	"context"

	wire "github.com/blockwise/blockwise/api"
)

// Recovery is a recovery the host knows of (see api.Recovery).
type Recovery = wire.Recovery

// Recover starts (or, with req.Resume, resumes) an instant recovery run
// by the host as a job: the point served read-write over NBD at once,
// copied into the new disk req.ToDisk in the background, then switched.
func (c *Client) Recover(ctx context.Context, req wire.RecoveryRequest) (*Recovery, error) {
	var out Recovery
	return &out, c.do(ctx, "POST", "/v1/recoveries", req, &out)
}

// Recoveries lists the host's recoveries, running or resumable.
func (c *Client) Recoveries(ctx context.Context) ([]Recovery, error) {
	var out []Recovery
	return out, c.do(ctx, "GET", "/v1/recoveries", nil, &out)
}

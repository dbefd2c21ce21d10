package sources

import (
	"context"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/quiesce"
)

// HostQuiesce is the quiescing of a host disk's backup through the guest
// agent socket agent, with o's policy, window and hooks; nil without an
// agent (a host disk no VM's agent was given for is not quiesced).
func HostQuiesce(o Options, agent string) (*quiesce.Options, error) {
	q, err := o.quiesceOptions()
	if err != nil || agent == "" {
		return nil, err
	}
	q.Connect = func(ctx context.Context) (quiesce.Freezer, error) { return quiesce.DialAgent(ctx, agent) }
	return &q, nil
}

// DiskQuiesce is HostQuiesce for the host's disk name: through agent if
// given, else through the disk's own agent property (`disk set --agent`),
// read from the host.
func DiskQuiesce(ctx context.Context, c *client.Client, name, agent string, o Options) (*quiesce.Options, error) {
	if agent != "" {
		return HostQuiesce(o, agent)
	}
	d, err := c.Disk(ctx, name)
	if err != nil {
		return nil, err
	}
	return HostQuiesce(o, d.Agent)
}

package client

import "context"

// Host describes the host: its datastore's identity and path, which a
// proxy reading the datastore directly (san transport) checks.
func (c *Client) Host(ctx context.Context) (*HostInfo, error) {
	var out HostInfo
	return &out, c.do(ctx, "GET", "/v1/host", nil, &out)
}

// Attach exposes a snapshot through a private unix-socket NBD export for
// this caller only (hotadd transport); Detach removes it. The host
// accepts it only over its unix-socket API.
func (c *Client) Attach(ctx context.Context, diskName, snapshot string) (*Attachment, error) {
	var out Attachment
	return &out, c.do(ctx, "POST", snapPath(diskName, snapshot)+"/attach", nil, &out)
}

// Detach ends an attachment, closing its connections and removing its socket.
func (c *Client) Detach(ctx context.Context, diskName, snapshot, id string) error {
	return c.do(ctx, "DELETE", snapPath(diskName, snapshot)+"/attach/"+esc(id), nil, nil)
}

func snapPath(diskName, snapshot string) string {
	return "/v1/disks/" + esc(diskName) + "/snapshots/" + esc(snapshot)
}

package client

import (
	"context"

	wire "github.com/blockwise/blockwise/api"
)

// CloneDisk makes disk req.Name from src (its snapshot req.Snapshot):
// linked (O(1), sharing the snapshot's layers) or full (copied inside the
// datastore). The result says how the bytes were copied.
func (c *Client) CloneDisk(ctx context.Context, src string, req CloneRequest) (*CloneResult, error) {
	var out CloneResult
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(src)+"/clone", req, &out)
}

// CloneDiskJob clones as CloneDisk does, in the background (req.Job is
// set): the task answers at once; its Job names the job (GetJob) whose
// summary is the CloneResult.
func (c *Client) CloneDiskJob(ctx context.Context, src string, req CloneRequest) (*Task, error) {
	req.Job = true
	var out Task
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(src)+"/clone", req, &out)
}

// CopyExtent asks the host to copy req.Length bytes from req.Source to
// req.Offset of disk dst inside its datastore (XCOPY). A request the host
// cannot offload is ErrNotSupported, with nothing changed: the caller
// moves the data itself. At most HostInfo.Offload.MaxCopySegment bytes
// (ErrTooLarge).
func (c *Client) CopyExtent(ctx context.Context, dst string, req CopyRequest) (*CopyResult, error) {
	var out CopyResult
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(dst)+"/copy", req, &out)
}

// Reclaim starts giving back the space of a disk's all-zero grains in
// the background, examining at most rate bytes per second (0: unbounded);
// see WaitTask.
func (c *Client) Reclaim(ctx context.Context, diskName string, rate int64) (*Task, error) {
	var out Task
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(diskName)+"/reclaim", wire.ReclaimRequest{Rate: rate}, &out)
}

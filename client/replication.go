package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	wire "github.com/blockwise/blockwise/api"
)

// Replication documents.
type (
	Replication              = wire.Replication
	CreateReplicationRequest = wire.CreateReplicationRequest
	ReplicationDisk          = wire.ReplicationDisk
	ReplicationPoint         = wire.ReplicationPoint
	Replica                  = wire.Replica
	FailoverRequest          = wire.FailoverRequest
	ReprotectRequest         = wire.ReprotectRequest
)

// ListReplications lists the groups this host replicates (source side).
func (c *Client) ListReplications(ctx context.Context) ([]Replication, error) {
	return callList[Replication](ctx, c, "/v1/replications")
}

// CreateReplication defines a group and declares it on its target.
func (c *Client) CreateReplication(ctx context.Context, req CreateReplicationRequest) (*Replication, error) {
	return call[Replication](ctx, c, "POST", "/v1/replications", req)
}

// Replication describes one group (source side).
func (c *Client) Replication(ctx context.Context, name string) (*Replication, error) {
	return call[Replication](ctx, c, "GET", "/v1/replications/"+esc(name), nil)
}

// DeleteReplication stops and removes a group (the target keeps its
// replica disks and points).
func (c *Client) DeleteReplication(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/replications/"+esc(name), nil, nil)
}

// ReplicationAction runs pause, resume, sync (a cycle now: a task),
// failover (planned migration: a task) or resync on a group. The task,
// if the action runs as one, is returned.
func (c *Client) ReplicationAction(ctx context.Context, name, action string, body any) (*Task, error) {
	return taskOf(call[Task](ctx, c, "POST", "/v1/replications/"+esc(name)+"/"+esc(action), body))
}

// ListReplicas lists the groups this host keeps replicas of (target side).
func (c *Client) ListReplicas(ctx context.Context) ([]Replica, error) {
	return callList[Replica](ctx, c, "/v1/replicas")
}

// Replica describes one replica group (target side).
func (c *Client) Replica(ctx context.Context, group string) (*Replica, error) {
	return call[Replica](ctx, c, "GET", "/v1/replicas/"+esc(group), nil)
}

// PutReplica declares a group on its target (the source host's call).
func (c *Client) PutReplica(ctx context.Context, group string, req wire.PutReplicaRequest) (*Replica, error) {
	return call[Replica](ctx, c, "PUT", "/v1/replicas/"+esc(group), req)
}

// DeleteReplica forgets a replica group; its disks and points stay.
func (c *Client) DeleteReplica(ctx context.Context, group string) error {
	return c.do(ctx, "DELETE", "/v1/replicas/"+esc(group), nil, nil)
}

// BeginCycle starts or resumes a cycle on the target.
func (c *Client) BeginCycle(ctx context.Context, group string, req wire.BeginCycleRequest) (*Replica, error) {
	return call[Replica](ctx, c, "POST", "/v1/replicas/"+esc(group)+"/cycles", req)
}

// CommitCycle makes the staged cycle a point on the target.
func (c *Client) CommitCycle(ctx context.Context, group, cycle string, req wire.CommitCycleRequest) (*ReplicationPoint, error) {
	return call[ReplicationPoint](ctx, c, "POST", "/v1/replicas/"+esc(group)+"/cycles/"+esc(cycle)+"/commit", req)
}

// Checksums asks a replica disk's block checksums (seeding).
func (c *Client) Checksums(ctx context.Context, group, disk string, req wire.ChecksumsRequest) (*wire.Checksums, error) {
	return call[wire.Checksums](ctx, c, "POST", "/v1/replicas/"+esc(group)+"/disks/"+esc(disk)+"/checksums", req)
}

// ReplicaAction runs failover, reprotect or demote on a replica group;
// failover and reprotect answer a task.
func (c *Client) ReplicaAction(ctx context.Context, group, action string, body any) (*Task, error) {
	return taskOf(call[Task](ctx, c, "POST", "/v1/replicas/"+esc(group)+"/"+esc(action), body))
}

// batchAck is the target's acknowledgment of a batch.
type batchAck struct {
	Progress int64 `json:"progress"`
}

// SendBatch posts one batch of frames of disk for [from, to) of a cycle
// (body zstd-compressed when zstd); the answer is the offset up to which
// the disk's delta is durable on the target.
func (c *Client) SendBatch(ctx context.Context, group, cycle, disk string, from, to int64, body []byte, zstd bool) (int64, error) {
	path := fmt.Sprintf("/v1/replicas/%s/cycles/%s/disks/%s?from=%s&to=%s", esc(group), esc(cycle), esc(disk),
		strconv.FormatInt(from, 10), strconv.FormatInt(to, 10))
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if zstd {
		req.Header.Set("Content-Encoding", "zstd")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return 0, decodeProblem(resp)
	}
	var ack batchAck
	if err := json.NewDecoder(resp.Body).Decode(&ack); err != nil {
		return 0, fmt.Errorf("POST %s: bad answer: %w", path, err)
	}
	return ack.Progress, nil
}

// ResyncRequest is the body of the resync action.
type ResyncRequest = wire.ResyncRequest

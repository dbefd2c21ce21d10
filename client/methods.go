package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// ListDisks lists the datastore's disks.
func (c *Client) ListDisks(ctx context.Context) ([]Disk, error) {
	var out []Disk
	return out, c.do(ctx, "GET", "/v1/disks", nil, &out)
}

// SelectDisks lists the disks whose labels selector selects
// ("tier=gold,env!=dev"; internal/labels).
func (c *Client) SelectDisks(ctx context.Context, selector string) ([]Disk, error) {
	var out []Disk
	return out, c.do(ctx, "GET", "/v1/disks?selector="+url.QueryEscape(selector), nil, &out)
}

// SetDiskLabels replaces a disk's labels.
func (c *Client) SetDiskLabels(ctx context.Context, name string, labels map[string]string) (*Disk, error) {
	var out Disk
	return &out, c.do(ctx, "PUT", "/v1/disks/"+esc(name)+"/labels", labels, &out)
}

// PatchDiskLabels sets the labels of set and removes those of remove,
// keeping the disk's others (a JSON merge patch).
func (c *Client) PatchDiskLabels(ctx context.Context, name string, set map[string]string, remove []string) (*Disk, error) {
	patch := map[string]*string{}
	for k, v := range set {
		patch[k] = &v
	}
	for _, k := range remove {
		patch[k] = nil
	}
	var out Disk
	return &out, c.do(ctx, "PATCH", "/v1/disks/"+esc(name)+"/labels", patch, &out)
}

// CreateDisk creates a thin disk.
func (c *Client) CreateDisk(ctx context.Context, req CreateDiskRequest) (*Disk, error) {
	var out Disk
	return &out, c.do(ctx, "POST", "/v1/disks", req, &out)
}

// Disk describes one disk.
func (c *Client) Disk(ctx context.Context, name string) (*Disk, error) {
	var out Disk
	return &out, c.do(ctx, "GET", "/v1/disks/"+esc(name), nil, &out)
}

// GrowDisk extends a disk to size bytes.
func (c *Client) GrowDisk(ctx context.Context, name string, size int64) (*Disk, error) {
	var out Disk
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(name)+"/grow", wire.GrowDiskRequest{Size: size}, &out)
}

// SetDiskAgent records the guest agent socket of the VM using a disk
// ("" forgets it); backups of the disk then quiesce the guest.
func (c *Client) SetDiskAgent(ctx context.Context, name, agent string) (*Disk, error) {
	var out Disk
	return &out, c.do(ctx, "PATCH", "/v1/disks/"+esc(name), wire.UpdateDiskRequest{Agent: &agent}, &out)
}

// DeleteDisk removes a disk; one with open NBD exports is ErrBusy.
func (c *Client) DeleteDisk(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/disks/"+esc(name), nil, nil)
}

// ListSnapshots lists a disk's snapshots, oldest first.
func (c *Client) ListSnapshots(ctx context.Context, diskName string) ([]Snapshot, error) {
	var out []Snapshot
	return out, c.do(ctx, "GET", "/v1/disks/"+esc(diskName)+"/snapshots", nil, &out)
}

// CreateSnapshot takes a snapshot; id "" lets the host name it. The
// result carries the change ID to use as "since" next time.
func (c *Client) CreateSnapshot(ctx context.Context, diskName, id, description string) (*Snapshot, error) {
	var out Snapshot
	req := wire.CreateSnapshotRequest{ID: id, Description: description}
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(diskName)+"/snapshots", req, &out)
}

// Snapshot describes one snapshot.
func (c *Client) Snapshot(ctx context.Context, diskName, id string) (*Snapshot, error) {
	var out Snapshot
	return &out, c.do(ctx, "GET", "/v1/disks/"+esc(diskName)+"/snapshots/"+esc(id), nil, &out)
}

// DeleteSnapshot removes a snapshot and returns its consolidation task
// (see WaitTask). A snapshot with an open NBD export is ErrBusy.
func (c *Client) DeleteSnapshot(ctx context.Context, diskName, id string) (*Task, error) {
	var out Task
	return &out, c.do(ctx, "DELETE", "/v1/disks/"+esc(diskName)+"/snapshots/"+esc(id), nil, &out)
}

// QueryChangedAreas is QueryChangedDiskAreas: one page of the areas of
// snapshot changed since changeID (AllChanges for every allocated area),
// from startOffset. Continue from StartOffset+Length until the size.
func (c *Client) QueryChangedAreas(ctx context.Context, diskName, snapshot, changeID string, startOffset int64) (*ChangedAreas, error) {
	q := url.Values{"snapshot": {snapshot}, "changeId": {changeID}, "startOffset": {strconv.FormatInt(startOffset, 10)}}
	var out ChangedAreas
	return &out, c.do(ctx, "GET", "/v1/disks/"+esc(diskName)+"/changes?"+q.Encode(), nil, &out)
}

// AllChangedAreas pages through QueryChangedAreas up to the snapshot's size.
func (c *Client) AllChangedAreas(ctx context.Context, diskName, snapshot, changeID string) ([]Area, error) {
	s, err := c.Snapshot(ctx, diskName, snapshot)
	if err != nil {
		return nil, err
	}
	return c.pageAreas(ctx, diskName, snapshot, s.Size, func(off int64) (*ChangedAreas, error) {
		return c.QueryChangedAreas(ctx, diskName, snapshot, changeID, off)
	})
}

// pageAreas asks page(off) from 0 until size, joining the areas.
func (c *Client) pageAreas(ctx context.Context, diskName, snapshot string, size int64, page func(int64) (*ChangedAreas, error)) ([]Area, error) {
	out := []Area{}
	for off := int64(0); off < size; {
		ca, err := page(off)
		if err != nil {
			return nil, err
		}
		out = append(out, ca.ChangedArea...)
		if ca.Length <= 0 {
			return nil, fmt.Errorf("changes of %s@%s: host made no progress at offset %d", diskName, snapshot, off)
		}
		off = ca.StartOffset + ca.Length
	}
	return out, nil
}

// Exports returns the NBD export of a disk (snapshot "") or snapshot and
// the URIs that reach it, preferred first.
func (c *Client) Exports(ctx context.Context, diskName, snapshot string) (*Exports, error) {
	p := "/v1/disks/" + esc(diskName) + "/exports"
	if snapshot != "" {
		p = "/v1/disks/" + esc(diskName) + "/snapshots/" + esc(snapshot) + "/exports"
	}
	var out Exports
	return &out, c.do(ctx, "GET", p, nil, &out)
}

// ListTasks lists the tasks the host remembers.
func (c *Client) ListTasks(ctx context.Context) ([]Task, error) {
	var out []Task
	return out, c.do(ctx, "GET", "/v1/tasks", nil, &out)
}

// Task returns a task's state now.
func (c *Client) Task(ctx context.Context, id string) (*Task, error) {
	var out Task
	return &out, c.do(ctx, "GET", "/v1/tasks/"+esc(id), nil, &out)
}

// WaitTask long-polls until the task ends or ctx is done. A failed task
// returns it with an error.
func (c *Client) WaitTask(ctx context.Context, id string) (*Task, error) {
	for {
		var t Task
		q := "?wait=" + pollSlice.String()
		if err := c.do(ctx, "GET", "/v1/tasks/"+esc(id)+q, nil, &t); err != nil {
			return nil, err
		}
		if t.State == TaskFailed {
			return &t, fmt.Errorf("task %s: %w: %s", id, ErrTaskFailed, t.Error)
		}
		if t.Ended() {
			return &t, nil
		}
		if err := ctx.Err(); err != nil {
			return &t, err
		}
	}
}

// OpenAPI returns the host's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	var out json.RawMessage
	return out, c.do(ctx, "GET", "/v1/openapi.json", nil, &out)
}

// CurrentLease is the disk's unexpired lease (ErrLeaseNotFound if none).
func (c *Client) CurrentLease(ctx context.Context, diskName string) (*Lease, error) {
	var out Lease
	return &out, c.do(ctx, "GET", "/v1/disks/"+esc(diskName)+"/lease", nil, &out)
}

// AcquireLease leases the disk to holder for ttl; ErrLeaseHeld while
// another holds it, unless replace is that lease's ID.
func (c *Client) AcquireLease(ctx context.Context, diskName, holder string, ttl time.Duration, replace string) (*Lease, error) {
	var out Lease
	req := wire.LeaseRequest{Holder: holder, TTLMillis: ttl.Milliseconds(), Replace: replace}
	return &out, c.do(ctx, "POST", "/v1/disks/"+esc(diskName)+"/lease", req, &out)
}

// RenewLease extends a lease to ttl from now; ErrLeaseNotFound once it
// expired and was taken, or was released.
func (c *Client) RenewLease(ctx context.Context, diskName, id string, ttl time.Duration) (*Lease, error) {
	var out Lease
	req := wire.LeaseRequest{TTLMillis: ttl.Milliseconds()}
	return &out, c.do(ctx, "PUT", "/v1/disks/"+esc(diskName)+"/lease/"+esc(id), req, &out)
}

// ReleaseLease ends a lease.
func (c *Client) ReleaseLease(ctx context.Context, diskName, id string) error {
	return c.do(ctx, "DELETE", "/v1/disks/"+esc(diskName)+"/lease/"+esc(id), nil, nil)
}

// CreateTicket issues an NBD ticket for the live disk (snapshot "") or a
// snapshot: a TLS client certificate that opens that export, and only
// it, over the host's TCP listeners until ttl (0: the host's default, 24
// hours), DeleteTicket, or the export or the API token is gone.
func (c *Client) CreateTicket(ctx context.Context, diskName, snapshot string, ttl time.Duration) (*Ticket, error) {
	p := "/v1/disks/" + esc(diskName) + "/tickets"
	if snapshot != "" {
		p = "/v1/disks/" + esc(diskName) + "/snapshots/" + esc(snapshot) + "/tickets"
	}
	if ttl < 0 {
		return nil, fmt.Errorf("%w: negative ticket ttl %v", ErrInvalidRequest, ttl)
	}
	// Whole seconds, rounded up: truncating 500ms to 0 would ask for the
	// host's default (24 hours) instead of the shortest ticket.
	secs := int64((ttl + time.Second - 1) / time.Second)
	var out Ticket
	return &out, c.do(ctx, "POST", p, wire.CreateTicketRequest{TTLSeconds: secs}, &out)
}

// ListTickets lists the host's live tickets (without keys).
func (c *Client) ListTickets(ctx context.Context) ([]Ticket, error) {
	var out []Ticket
	return out, c.do(ctx, "GET", "/v1/tickets", nil, &out)
}

// DeleteTicket revokes a ticket; an unknown one is ErrTicketNotFound.
func (c *Client) DeleteTicket(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/tickets/"+esc(id), nil, nil)
}

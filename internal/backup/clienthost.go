package backup

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
)

// ClientHost is the Host of a backup that talks to blockwise's host API.
type ClientHost struct {
	C *client.Client
	// TLS for nbds:// exports, when the host serves them.
	NBD *nbd.ClientOptions
}

var _ Host = (*ClientHost)(nil)

// hostErr maps the client's sentinels to the ones Run reacts to.
func hostErr(err error) error {
	switch {
	case errors.Is(err, client.ErrChangeIDInvalid):
		return fmt.Errorf("%w: %w", ErrChangeIDInvalid, err)
	case errors.Is(err, client.ErrBusy):
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case errors.Is(err, client.ErrLeaseHeld):
		return fmt.Errorf("%w: %w", ErrLeaseHeld, err)
	case errors.Is(err, client.ErrLeaseNotFound):
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}

// Disk implements Host.
func (h ClientHost) Disk(ctx context.Context, name string) (DiskInfo, error) {
	d, err := h.C.Disk(ctx, name)
	if err != nil {
		return DiskInfo{}, err
	}
	return DiskInfo{UUID: d.UUID, Size: d.Size}, nil
}

// Snapshots implements Host.
func (h ClientHost) Snapshots(ctx context.Context, name string) ([]Snapshot, error) {
	ss, err := h.C.ListSnapshots(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]Snapshot, len(ss))
	for i, s := range ss {
		out[i] = Snapshot{ID: s.ID, ChangeID: s.ChangeID, Size: s.Size, Created: s.Created, Description: s.Description}
	}
	return out, nil
}

// CreateSnapshot implements Host.
func (h ClientHost) CreateSnapshot(ctx context.Context, name, desc string) (Snapshot, error) {
	s, err := h.C.CreateSnapshot(ctx, name, "", desc)
	if err != nil {
		return Snapshot{}, hostErr(err)
	}
	return Snapshot{ID: s.ID, ChangeID: s.ChangeID, Size: s.Size, Created: s.Created, TreeBlockSize: s.TreeBlockSize}, nil
}

// ChangedAreas implements Host.
func (h ClientHost) ChangedAreas(ctx context.Context, name, snap string, start int64, since string) (*Areas, error) {
	ca, err := h.C.QueryChangedAreas(ctx, name, snap, since, start)
	if err != nil {
		return nil, hostErr(err)
	}
	out := &Areas{StartOffset: ca.StartOffset, Length: ca.Length}
	for _, a := range ca.ChangedArea {
		out.Changed = append(out.Changed, Area{a.Start, a.Length})
	}
	return out, nil
}

// DeleteSnapshot implements Host: it waits for the consolidation.
func (h ClientHost) DeleteSnapshot(ctx context.Context, name, snap string) error {
	t, err := h.C.DeleteSnapshot(ctx, name, snap)
	if err != nil {
		return hostErr(err)
	}
	t, err = h.C.WaitTask(ctx, t.ID)
	if err != nil {
		return err
	}
	if t.State == client.TaskFailed {
		return fmt.Errorf("consolidation of %s@%s failed: %s", name, snap, t.Error)
	}
	return nil
}

// OpenNBD opens the snapshot's export through the first URI the host
// offers that connects (the network transport). An nbds:// URI over TCP
// needs a ticket: one is asked for and revoked when the source closes.
func (h ClientHost) OpenNBD(ctx context.Context, name, snap string) (Source, error) {
	ex, err := h.C.Exports(ctx, name, snap)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, uri := range ex.URIs {
		src, err := h.dial(ctx, uri, name, snap)
		if err == nil {
			return src, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", uri, err))
	}
	return nil, fmt.Errorf("no export of %s@%s reachable: %w", name, snap, errors.Join(errs...))
}

// AcquireLease implements Leaser.
func (h ClientHost) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, replace string) (Lease, error) {
	l, err := h.C.AcquireLease(ctx, name, holder, ttl, replace)
	if err != nil {
		return Lease{}, hostErr(err)
	}
	return Lease{ID: l.ID, Holder: l.Holder, Acquired: l.Acquired, Expires: l.Expires}, nil
}

// CurrentLease implements Leaser.
func (h ClientHost) CurrentLease(ctx context.Context, name string) (Lease, error) {
	l, err := h.C.CurrentLease(ctx, name)
	if err != nil {
		return Lease{}, hostErr(err)
	}
	return Lease{ID: l.ID, Holder: l.Holder, Acquired: l.Acquired, Expires: l.Expires}, nil
}

// RenewLease implements Leaser.
func (h ClientHost) RenewLease(ctx context.Context, name, id string, ttl time.Duration) error {
	_, err := h.C.RenewLease(ctx, name, id, ttl)
	return hostErr(err)
}

// ReleaseLease implements Leaser.
func (h ClientHost) ReleaseLease(ctx context.Context, name, id string) error {
	return hostErr(h.C.ReleaseLease(ctx, name, id))
}

// dial connects to uri; a TLS TCP address gets a ticket from the host
// first, revoked when the connection closes.
func (h ClientHost) dial(ctx context.Context, uri, name, snap string) (Source, error) {
	u, err := nbd.ParseURI(uri)
	if err != nil || u.Network != "tcp" || !u.TLS {
		return nbd.Dial(ctx, uri, h.NBD)
	}
	tk, err := h.C.CreateTicket(ctx, name, snap, 0)
	if err != nil {
		return nil, err
	}
	release := func() { h.C.DeleteTicket(context.WithoutCancel(ctx), tk.ID) }
	var opts nbd.ClientOptions
	if h.NBD != nil {
		opts = *h.NBD
	}
	var roots *x509.CertPool
	if opts.TLSConfig != nil {
		roots = opts.TLSConfig.RootCAs
	}
	if opts.TLSConfig, err = client.TicketTLS(tk, roots); err != nil {
		release()
		return nil, err
	}
	c, err := nbd.Dial(ctx, uri, &opts)
	if err != nil {
		release()
		return nil, err
	}
	return ticketed{Client: c, release: release}, nil
}

// ticketed is a connection whose ticket is revoked when it closes.
type ticketed struct {
	*nbd.Client
	release func()
}

// Close closes the connection, then revokes its ticket.
func (t ticketed) Close() error {
	err := t.Client.Close()
	t.release()
	return err
}

package host

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// Host owns a datastore's open disks.
type Host struct {
	ds *disk.Datastore
	mu struct {
		sync.Mutex
		disks   map[string]*disk.Disk
		refs    map[string]int // open NBD exports by disk
		io      map[string]*ioCounters
		leases  map[string]Lease         // by disk (lease.go)
		gates   map[string]*gate         // by disk (group.go)
		virtual map[string]VirtualExport // by export name (group.go)
		closed  bool
	}
	warn   spaceWarn  // soft threshold of datastore use (space.go)
	labels labelStore // the disks' labels (labels.go)
}

var _ nbd.Exporter = (*Host)(nil)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("host closed")

// New serves the disks of ds.
func New(ds *disk.Datastore) *Host {
	h := &Host{ds: ds}
	h.mu.disks = map[string]*disk.Disk{}
	h.mu.refs = map[string]int{}
	h.mu.io = map[string]*ioCounters{}
	h.mu.leases = map[string]Lease{}
	h.mu.gates = map[string]*gate{}
	h.mu.virtual = map[string]VirtualExport{}
	return h
}

// Datastore is the host's datastore.
func (h *Host) Datastore() *disk.Datastore { return h.ds }

// Disk returns the named disk, opening it on first use; it stays open
// (and locked against other processes) until Close or Delete.
func (h *Host) Disk(name string) (*disk.Disk, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closed {
		return nil, ErrClosed
	}
	if d, ok := h.mu.disks[name]; ok {
		return d, nil
	}
	d, err := h.ds.Open(name)
	if err != nil {
		return nil, err
	}
	h.mu.disks[name] = d
	return d, nil
}

// Create makes a disk and keeps it open.
func (h *Host) Create(name string, size int64, opt disk.Options) (*disk.Disk, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closed {
		return nil, ErrClosed
	}
	d, err := h.ds.Create(name, size, opt)
	if err != nil {
		return nil, err
	}
	h.mu.disks[name] = d
	// A disk removed behind the host's back may have left its labels.
	return d, h.forgetLabels(name)
}

// Delete closes and removes a disk. A disk with open NBD exports is
// ErrBusy and stays as it is.
func (h *Host) Delete(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.mu.refs[name]; n > 0 {
		return fmt.Errorf("disk %s: %w: %d open exports", name, disk.ErrBusy, n)
	}
	if g := h.mu.gates[name]; g != nil {
		g.RLock()
		why := g.protected
		g.RUnlock()
		if why != "" {
			return fmt.Errorf("disk %s: %w: %s", name, disk.ErrBusy, why)
		}
	}
	if d, ok := h.mu.disks[name]; ok {
		if err := d.Close(); err != nil {
			return err
		}
		delete(h.mu.disks, name)
	}
	delete(h.mu.io, name)
	delete(h.mu.leases, name) // a new disk of the name is not leased (lease.go)
	if err := h.ds.Delete(name); err != nil {
		return err
	}
	return h.forgetLabels(name)
}

// Close flushes and closes every open disk.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.closed = true
	var errs []error
	for name, d := range h.mu.disks {
		if err := d.Close(); err != nil {
			errs = append(errs, fmt.Errorf("disk %s: %w", name, err))
		}
	}
	h.mu.disks = nil
	return errors.Join(errs...)
}

// SplitExport splits "DISK@SNAPSHOT" (snapshot "" for the live disk).
func SplitExport(name string) (diskName, snapshot string) {
	diskName, snapshot, _ = strings.Cut(name, "@")
	return diskName, snapshot
}

// Open implements nbd.Exporter.
func (h *Host) Open(ctx context.Context, name string) (nbd.Export, error) {
	if open := h.virtualExport(name); open != nil {
		x, err := open(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", nbd.ErrUnknownExport, name, err)
		}
		return h.acquire(name, x), nil
	}
	dn, sn := SplitExport(name)
	d, err := h.Disk(dn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", nbd.ErrUnknownExport, name, err)
	}
	if sn == "" && !strings.Contains(name, "@") {
		return h.acquire(dn, &liveExport{d: d, g: h.gate(dn)}), nil
	}
	s, err := d.OpenSnapshot(sn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", nbd.ErrUnknownExport, name, err)
	}
	return h.acquire(dn, &snapExport{d: d, s: s}), nil
}

// List implements nbd.Exporter: every disk and every snapshot.
func (h *Host) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	names, err := h.ds.List()
	if err != nil {
		return nil, err
	}
	var out []nbd.ExportInfo
	h.mu.Lock()
	for n := range h.mu.virtual {
		out = append(out, nbd.ExportInfo{Name: n, Description: "scratch copy (test failover)"})
	}
	h.mu.Unlock()
	for _, n := range names {
		out = append(out, nbd.ExportInfo{Name: n, Description: "live disk"})
		d, err := h.Disk(n)
		if err != nil {
			continue // held by another process
		}
		for _, s := range d.Snapshots() {
			out = append(out, nbd.ExportInfo{Name: n + "@" + s.ID, Description: "snapshot " + s.Description})
		}
	}
	return out, nil
}

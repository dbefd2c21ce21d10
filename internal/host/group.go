package host

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// gate orders a disk's NBD writes against the host's own operations on
// it: every write through a live export holds it shared; SnapshotGroup
// holds it exclusively, so a group's snapshots see one instant, and
// Protect refuses writes under it.
type gate struct {
	sync.RWMutex
	protected string // why writes are refused ("" lets them through)
}

// gate returns disk name's gate, made on first use.
func (h *Host) gate(name string) *gate {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.mu.gates[name]
	if g == nil {
		g = &gate{}
		h.mu.gates[name] = g
	}
	return g
}

// ErrProtected is a write to a disk the host keeps read-only (a replica,
// or a source stopped for a planned migration).
var ErrProtected = errors.New("disk is read-only on this host")

// Protect makes disk name read-only for NBD clients: exports opened from
// now on are read-only, and writes through those already open fail. It
// waits for writes in flight. reason says why (shown to no one but logs).
func (h *Host) Protect(name, reason string) {
	g := h.gate(name)
	g.Lock()
	g.protected = reason
	g.Unlock()
}

// Unprotect makes disk name writable again.
func (h *Host) Unprotect(name string) {
	g := h.gate(name)
	g.Lock()
	g.protected = ""
	g.Unlock()
}

// Protected reports why disk name is read-only ("" when it is not).
func (h *Host) Protected(name string) string {
	g := h.gate(name)
	g.RLock()
	defer g.RUnlock()
	return g.protected
}

// SnapshotGroup takes snapshot id of every named disk at one instant:
// NBD writes to all of them are held while the snapshots are taken, so
// no snapshot holds a write that another one misses while an earlier
// write is missing (a crash-consistent group). On failure the snapshots
// already taken are deleted and the error returned.
func (h *Host) SnapshotGroup(ctx context.Context, names []string, id, description string) ([]disk.SnapshotInfo, error) {
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(names) {
		return nil, fmt.Errorf("%w: a disk is named twice in the group", disk.ErrInvalidName)
	}
	disks := make([]*disk.Disk, len(names))
	for i, n := range names {
		d, err := h.Disk(n)
		if err != nil {
			return nil, err
		}
		if t := d.Consolidation(); t != nil { // a snapshot waits for it anyway
			if err := t.Wait(ctx); err != nil {
				return nil, err
			}
		}
		// Flushed before the gates close, the snapshot's own flush has
		// little left to do while writes wait.
		if err := d.Flush(); err != nil {
			return nil, err
		}
		disks[i] = d
	}
	for _, n := range sorted { // one order: two groups never deadlock
		g := h.gate(n)
		g.Lock()
		defer g.Unlock()
	}
	out := make([]disk.SnapshotInfo, 0, len(names))
	for i, d := range disks {
		info, err := d.CreateSnapshot(id, description)
		if err != nil {
			for j := range out {
				disks[j].DeleteSnapshot(id)
			}
			return nil, fmt.Errorf("disk %s: %w", names[i], err)
		}
		out = append(out, info)
	}
	return out, nil
}

// VirtualExport opens an export that is not a datastore disk (a test
// failover's scratch copy): the NBD server opens it by its name.
type VirtualExport func(ctx context.Context) (nbd.Export, error)

// AddExport serves open under name until RemoveExport. A name that is a
// disk or an export already is disk.ErrExists.
func (h *Host) AddExport(name string, open VirtualExport) error {
	if err := disk.ValidName(name); err != nil {
		return err
	}
	names, err := h.ds.List()
	if err != nil {
		return err
	}
	if slices.Contains(names, name) {
		return fmt.Errorf("export %s: %w: a disk has that name", name, disk.ErrExists)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.mu.virtual[name]; ok {
		return fmt.Errorf("export %s: %w", name, disk.ErrExists)
	}
	h.mu.virtual[name] = open
	return nil
}

// RemoveExport stops serving a virtual export to new connections.
func (h *Host) RemoveExport(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.mu.virtual, name)
}

func (h *Host) virtualExport(name string) VirtualExport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.virtual[name]
}

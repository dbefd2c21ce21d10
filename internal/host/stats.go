package host

import (
	"context"
	"sort"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// IOStats counts the NBD I/O of one disk (live and snapshot exports),
// since the host started.
type IOStats struct {
	ReadOps, ReadBytes, WriteOps, WriteBytes uint64
}

type ioCounters struct {
	readOps, readBytes, writeOps, writeBytes atomic.Uint64
}

func (c *ioCounters) snapshot() IOStats {
	return IOStats{c.readOps.Load(), c.readBytes.Load(), c.writeOps.Load(), c.writeBytes.Load()}
}

// counted wraps an export to count its I/O and to hold a reference on its
// disk, so Delete refuses a disk some NBD client still uses.
type counted struct {
	nbd.Export
	h    *Host
	name string
	c    *ioCounters
}

var _ nbd.Export = (*counted)(nil)

// ReadAt reads from the export and counts the bytes for /metrics.
func (e *counted) ReadAt(ctx context.Context, p []byte, off int64) error {
	err := e.Export.ReadAt(ctx, p, off)
	if err == nil {
		e.c.readOps.Add(1)
		e.c.readBytes.Add(uint64(len(p)))
	}
	return err
}

// WriteAt writes to the export and counts the bytes for /metrics.
func (e *counted) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	err := e.Export.WriteAt(ctx, p, off, fua)
	if err == nil {
		e.c.writeOps.Add(1)
		e.c.writeBytes.Add(uint64(len(p)))
	}
	return err
}

// countedNoWait is counted for an export that can read without waiting:
// the server sees NoWaitReader through the wrapper only when the export
// has it.
type countedNoWait struct {
	*counted
	nw nbd.NoWaitReader
}

var _ nbd.NoWaitReader = (*countedNoWait)(nil)

// ReadAtNoWait reads from memory if it can and counts what it served.
func (e *countedNoWait) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	err := e.nw.ReadAtNoWait(ctx, p, off)
	if err == nil {
		e.c.readOps.Add(1)
		e.c.readBytes.Add(uint64(len(p)))
	}
	return err
}

// Close closes the export and drops the disk reference it held.
func (e *counted) Close() error {
	err := e.Export.Close()
	e.h.release(e.name)
	return err
}

// acquire counts an open export of disk name; the caller holds no lock.
func (h *Host) acquire(name string, x nbd.Export) nbd.Export {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.refs[name]++
	c := h.mu.io[name]
	if c == nil {
		c = &ioCounters{}
		h.mu.io[name] = c
	}
	e := &counted{Export: x, h: h, name: name, c: c}
	if nw, ok := x.(nbd.NoWaitReader); ok {
		return &countedNoWait{counted: e, nw: nw}
	}
	return e
}

func (h *Host) release(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.refs[name]--; h.mu.refs[name] <= 0 {
		delete(h.mu.refs, name)
	}
}

// OpenExports is the number of NBD exports open on disk name.
func (h *Host) OpenExports(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.refs[name]
}

// DiskStats is what the host knows of one open disk.
type DiskStats struct {
	Name        string
	Disk        *disk.Disk
	IO          IOStats
	OpenExports int
}

// OpenDisks describes the disks this host has open, sorted by name.
func (h *Host) OpenDisks() []DiskStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]DiskStats, 0, len(h.mu.disks))
	for name, d := range h.mu.disks {
		s := DiskStats{Name: name, Disk: d, OpenExports: h.mu.refs[name]}
		if c := h.mu.io[name]; c != nil {
			s.IO = c.snapshot()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

package host

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// nbdErr maps engine errors to the NBD sentinels, keeping both in the chain.
func nbdErr(err error, write bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, disk.ErrNoSpace): // QEMU's werror=enospc pauses the guest
		return fmt.Errorf("%w: %w", nbd.ErrNoSpace, err)
	case errors.Is(err, disk.ErrMisaligned):
		return fmt.Errorf("%w: %w", nbd.ErrMisaligned, err)
	case errors.Is(err, disk.ErrOutOfRange) && write:
		return fmt.Errorf("%w: %w", nbd.ErrNoSpace, err)
	case errors.Is(err, disk.ErrOutOfRange):
		return fmt.Errorf("%w: %w", nbd.ErrOutOfRange, err)
	case errors.Is(err, disk.ErrReadOnly):
		return fmt.Errorf("%w: %w", nbd.ErrReadOnly, err)
	case errors.Is(err, disk.ErrNotSupported): // FAST_ZERO that would be slow
		return fmt.Errorf("%w: %w", nbd.ErrNotSupported, err)
	}
	return err
}

// blockSizes: 512-byte sectors; 4 KiB preferred (the default grain, and
// what avoids read-modify-write); 32 MiB, QEMU's own maximum.
var blockSizes = nbd.BlockSizes{Minimum: disk.Sector, Preferred: 4096, Maximum: 32 << 20}

// liveExport serves a disk's live data read-write over NBD; its writes
// hold the disk's gate shared (group.go).
type liveExport struct {
	d *disk.Disk
	g *gate
}

// write runs a write under the gate, refused while the disk is protected.
func (e *liveExport) write(f func() error) error {
	e.g.RLock()
	defer e.g.RUnlock()
	if e.g.protected != "" {
		return fmt.Errorf("%w: %w (%s)", nbd.ErrReadOnly, ErrProtected, e.g.protected)
	}
	return f()
}

var (
	_ nbd.Export       = (*liveExport)(nil)
	_ nbd.NoWaitReader = (*liveExport)(nil)
	_ nbd.NoWaitReader = (*snapExport)(nil)
)

// Size is the disk's current size.
func (e *liveExport) Size() int64 { return e.d.Size() }

// ReadOnly is false unless the host protects the disk (a replica): the
// live disk takes the guest's writes.
func (e *liveExport) ReadOnly() bool {
	e.g.RLock()
	defer e.g.RUnlock()
	return e.g.protected != ""
}

// MultiConn is true: every connection reaches the same engine.
func (e *liveExport) MultiConn() bool { return true } // one engine behind every connection
// BlockSizes advertises sector minimum, grain preferred.
func (e *liveExport) BlockSizes() nbd.BlockSizes { return blockSizes }

// Close does nothing: the host, not the connection, owns the disk.
func (e *liveExport) Close() error { return nil } // the host owns the disk

// ReadAt reads the disk, mapping engine errors to NBD errors.
func (e *liveExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := e.d.ReadAt(p, off)
	return nbdErr(err, false)
}

// ReadAtNoWait reads the disk if its bytes are in the page cache, else
// fails with nbd.ErrWouldBlock (the server then reads on a worker).
func (e *liveExport) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	_, err := e.d.ReadAtNoWait(p, off)
	return noWaitErr(err)
}

// noWaitErr maps a ReadAtNoWait error: nbd.ErrWouldBlock for a read
// that would wait (no allocation: a miss is common), the usual mapping
// for anything else.
func noWaitErr(err error) error {
	if errors.Is(err, disk.ErrWouldBlock) {
		return nbd.ErrWouldBlock
	}
	return nbdErr(err, false)
}

// WriteAt writes the disk; with fua it flushes before returning.
func (e *liveExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return e.write(func() error {
		if _, err := e.d.WriteAt(p, off); err != nil {
			return nbdErr(err, true)
		}
		if fua {
			return e.d.Flush()
		}
		return nil
	})
}

// Zero is NBD_CMD_WRITE_ZEROES: without punch (NO_HOLE) the range stays
// allocated; with fast (FAST_ZERO) a zeroing the engine could only do by
// writing zeroes fails with ENOTSUP before anything changes.
func (e *liveExport) Zero(ctx context.Context, off, length int64, punch, fast bool) error {
	return e.write(func() error { return nbdErr(e.d.WriteZeroes(off, length, !punch, fast), true) })
}

// Trim deallocates a range (it then reads as zeroes).
func (e *liveExport) Trim(ctx context.Context, off, length int64) error {
	return e.write(func() error { return nbdErr(e.d.Trim(off, length), true) })
}

// Flush makes every completed write durable.
func (e *liveExport) Flush(ctx context.Context) error { return e.d.Flush() }

// MetaContexts offers base:allocation only: CBT is asked of snapshots.
func (e *liveExport) MetaContexts(prefix string) []string {
	return filterPrefix([]string{nbd.ContextBaseAllocation}, prefix)
}

// BlockStatus reports holes and zero grains for base:allocation.
func (e *liveExport) BlockStatus(ctx context.Context, name string, off, length int64) ([]nbd.Extent, error) {
	if name != nbd.ContextBaseAllocation {
		return nil, fmt.Errorf("%w: context %s", nbd.ErrNotSupported, name)
	}
	ext, err := e.d.Extents(off, length)
	return allocation(ext), nbdErr(err, false)
}

// allocation turns engine extents into base:allocation extents.
func allocation(ext []disk.Extent) []nbd.Extent {
	out := make([]nbd.Extent, 0, len(ext))
	for _, x := range ext {
		var f uint32
		if x.Zero {
			f = nbd.StateHole | nbd.StateZero
		}
		out = append(out, nbd.Extent{Length: uint64(x.Len), Flags: f})
	}
	return out
}

// filterPrefix keeps the names starting with prefix.
func filterPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// snapExport serves a snapshot read-only, with its CBT as dirty bitmaps.
type snapExport struct {
	d *disk.Disk
	s *disk.Snapshot
}

var _ nbd.Export = (*snapExport)(nil)

// Size is the disk's size when the snapshot was taken.
func (e *snapExport) Size() int64 { return e.s.Size() }

// ReadOnly is true: a snapshot is frozen.
func (e *snapExport) ReadOnly() bool { return true }

// MultiConn is true: nothing changes, so every connection agrees.
func (e *snapExport) MultiConn() bool { return true }

// BlockSizes are the live disk's.
func (e *snapExport) BlockSizes() nbd.BlockSizes { return blockSizes }

// Close releases the snapshot view, so the snapshot can be deleted.
func (e *snapExport) Close() error { return e.s.Close() }

// Flush has nothing to do on a read-only export.
func (e *snapExport) Flush(ctx context.Context) error { return nil }

// ReadAt reads the snapshot's data.
func (e *snapExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := e.s.ReadAt(p, off)
	return nbdErr(err, false)
}

// ReadAtNoWait reads the snapshot if its bytes are in the page cache,
// else fails with nbd.ErrWouldBlock.
func (e *snapExport) ReadAtNoWait(ctx context.Context, p []byte, off int64) error {
	_, err := e.s.ReadAtNoWait(p, off)
	return noWaitErr(err)
}

// WriteAt refuses: a snapshot is read-only.
func (e *snapExport) WriteAt(context.Context, []byte, int64, bool) error { return nbd.ErrReadOnly }

// Zero refuses: a snapshot is read-only.
func (e *snapExport) Zero(context.Context, int64, int64, bool, bool) error {
	return nbd.ErrReadOnly
}

// Trim refuses: a snapshot is read-only.
func (e *snapExport) Trim(context.Context, int64, int64) error { return nbd.ErrReadOnly }

// MetaContexts offers base:allocation and a qemu:dirty-bitmap:ID per
// change ID the snapshot can answer.
func (e *snapExport) MetaContexts(prefix string) []string {
	names := []string{nbd.ContextBaseAllocation}
	for _, id := range e.s.ChangeIDs() {
		names = append(names, nbd.DirtyBitmapPrefix+id)
	}
	return filterPrefix(names, prefix)
}

// BlockStatus answers base:allocation from the layers and a dirty bitmap
// from CBT.
func (e *snapExport) BlockStatus(ctx context.Context, name string, off, length int64) ([]nbd.Extent, error) {
	if name == nbd.ContextBaseAllocation {
		ext, err := e.s.Extents(off, length)
		return allocation(ext), nbdErr(err, false)
	}
	id, ok := strings.CutPrefix(name, nbd.DirtyBitmapPrefix)
	if !ok || id == cbt.Any {
		return nil, fmt.Errorf("%w: context %s", nbd.ErrNotSupported, name)
	}
	return e.dirty(id, off, length)
}

// dirty answers a qemu:dirty-bitmap context: runs of changed (flag 1) and
// unchanged (0) bytes over [off, off+length).
func (e *snapExport) dirty(id string, off, length int64) ([]nbd.Extent, error) {
	var out []nbd.Extent
	add := func(n int64, f uint32) {
		if k := len(out); k > 0 && out[k-1].Flags == f {
			out[k-1].Length += uint64(n)
		} else if n > 0 {
			out = append(out, nbd.Extent{Length: uint64(n), Flags: f})
		}
	}
	end, pos := off+length, off
	for pos < end {
		ca, err := e.s.ChangedAreas(pos, id)
		if err != nil {
			return nil, err
		}
		for _, a := range ca.ChangedArea {
			a0, a1 := max(a.Start, pos), min(a.Start+a.Length, end)
			if a0 >= end {
				break
			}
			add(a0-pos, 0)
			add(a1-a0, nbd.StateDirty)
			pos = a1
		}
		next := ca.StartOffset + ca.Length
		if next >= end || len(ca.ChangedArea) < disk.MaxAreas {
			break
		}
		pos = max(pos, next)
	}
	add(end-pos, 0)
	return out, nil
}

package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
)

// Engine helpers: what the replica does to disks of its own host.

// deleteSnap deletes snapshot id of d and waits for its consolidation; a
// missing snapshot is not an error.
func deleteSnap(ctx context.Context, d *disk.Disk, id string) error {
	for {
		t, err := d.DeleteSnapshot(id)
		switch {
		case errors.Is(err, disk.ErrNotFound):
			return nil
		case errors.Is(err, disk.ErrBusy): // another consolidation, or an open view
			if err := waitIdle(ctx, d); err != nil {
				return err
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("delete snapshot %s: %w", id, errors.Join(err, disk.ErrBusy))
			}
			continue
		case err != nil:
			return err
		}
		return t.Wait(ctx)
	}
}

// waitIdle waits for d's running consolidation, if any.
func waitIdle(ctx context.Context, d *disk.Disk) error {
	if t := d.Consolidation(); t != nil {
		return t.Wait(ctx)
	}
	return nil
}

// snapshotIdle takes snapshot id of d once no consolidation runs.
func snapshotIdle(ctx context.Context, d *disk.Disk, id, desc string) (disk.SnapshotInfo, error) {
	for {
		if err := waitIdle(ctx, d); err != nil {
			return disk.SnapshotInfo{}, err
		}
		info, err := d.CreateSnapshot(id, desc)
		if !errors.Is(err, disk.ErrBusy) {
			return info, err
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return info, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func snapInfo(d *disk.Disk, id string) (disk.SnapshotInfo, bool) {
	for _, s := range d.Snapshots() {
		if s.ID == id {
			return s, true
		}
	}
	return disk.SnapshotInfo{}, false
}

// areasOf pages through ChangedAreas of snapshot s since changeID.
func areasOf(s *disk.Snapshot, changeID string) ([]wire.Area, error) {
	var out []wire.Area
	for off := int64(0); off < s.Size(); {
		ca, err := s.ChangedAreas(off, changeID)
		if err != nil {
			return nil, err
		}
		for _, a := range ca.ChangedArea {
			out = append(out, wire.Area{Start: a.Start, Length: a.Length})
		}
		off = ca.StartOffset + ca.Length
		if ca.Length == 0 {
			break
		}
	}
	return out, nil
}

// tmpSnap names the scratch snapshot that lets a live disk answer
// "changed since": CBT answers snapshots only.
const tmpSnap = "replica-scan"

// changedSince lists the areas of d's live data written after snapshot
// base (by CBT, through a scratch snapshot deleted before returning).
func changedSince(ctx context.Context, d *disk.Disk, base string) ([]wire.Area, error) {
	bi, ok := snapInfo(d, base)
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", base, disk.ErrNotFound)
	}
	if err := deleteSnap(ctx, d, tmpSnap); err != nil { // a crash's leftover
		return nil, err
	}
	if _, err := snapshotIdle(ctx, d, tmpSnap, "replication scan"); err != nil {
		return nil, err
	}
	s, err := d.OpenSnapshot(tmpSnap)
	if err != nil {
		return nil, err
	}
	areas, err := areasOf(s, bi.ChangeID)
	s.Close()
	return areas, errors.Join(err, deleteSnap(ctx, d, tmpSnap))
}

// revertLive makes d's live data equal to snapshot base again: what CBT
// says was written since is copied back from base (a whole comparison
// when CBT cannot answer). The writes' own record stays in CBT, which
// only over-reports.
func revertLive(ctx context.Context, d *disk.Disk, base string) error {
	areas, err := changedSince(ctx, d, base)
	if errors.Is(err, disk.ErrChangeIDInvalid) || errors.Is(err, disk.ErrCBTDisabled) || errors.Is(err, cbt.ErrChangeIDInvalid) {
		areas, err = []wire.Area{{Start: 0, Length: d.Size()}}, nil
	}
	if err != nil {
		return err
	}
	s, err := d.OpenSnapshot(base)
	if err != nil {
		return err
	}
	defer s.Close()
	buf, cur := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, a := range areas {
		for off := a.Start; off < a.Start+a.Length; off += int64(len(buf)) {
			n := min(int64(len(buf)), a.Start+a.Length-off)
			if _, err := s.ReadAt(buf[:n], off); err != nil {
				return err
			}
			if _, err := d.ReadAt(cur[:n], off); err != nil {
				return err
			}
			if bytes.Equal(buf[:n], cur[:n]) {
				continue
			}
			if _, err := d.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
	}
	return d.Flush()
}

// sweep starts deleting the snapshots of d whose ID has prefix and that
// drop says go, without waiting: one consolidation runs at a time, so
// the others wait for a later sweep (the next snapshot waits for the
// one running anyway).
func sweep(d *disk.Disk, prefix string, drop func(id string) bool) {
	for _, s := range d.Snapshots() {
		if strings.HasPrefix(s.ID, prefix) && drop(s.ID) {
			if _, err := d.DeleteSnapshot(s.ID); err != nil {
				return // busy: a later sweep
			}
		}
	}
}

// keptName names a snapshot that keeps a losing side's writes (R7):
// its time, and a random suffix so two in one second differ.
func keptName() string {
	return "kept-" + time.Now().UTC().Format("20060102T150405") + "-" + newID()[:4]
}

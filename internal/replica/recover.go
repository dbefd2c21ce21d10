package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// recoverAll runs at the host's start, before any cycle is accepted: for
// every replica group, snapshots of points never listed are deleted and
// a staged (half-applied) cycle is rolled back, so the replica disks
// hold exactly the last complete point (invariant R4).
func (t *target) recoverAll(ctx context.Context) error {
	names, err := t.store.names()
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range names {
		if err := t.recover(ctx, g); err != nil {
			errs = append(errs, fmt.Errorf("replica %s: %w", g, err))
		}
	}
	return errors.Join(errs...)
}

func (t *target) recover(ctx context.Context, group string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return err
	}
	if st.State == targetReceiving {
		for _, rd := range st.Disks {
			t.h.Protect(rd.Name, "replica of "+group)
		}
	}
	listed := map[string]bool{}
	for _, p := range append([]wire.ReplicationPoint{st.Base}, st.Points...) {
		for _, s := range p.Snapshots {
			listed[s] = true
		}
	}
	last := st.last()
	for _, rd := range st.Disks {
		d, err := t.h.Disk(rd.Name)
		if err != nil {
			return err
		}
		for _, s := range d.Snapshots() {
			if strings.HasPrefix(s.ID, "rp-") && !listed[s.ID] {
				if err := deleteSnap(ctx, d, s.ID); err != nil {
					return err
				}
			}
		}
		if st.Staging != nil && st.State == targetReceiving {
			if err := revertLive(ctx, d, last.Snapshots[rd.Name]); err != nil {
				return err
			}
		}
	}
	if st.Staging == nil && len(st.Tests) == 0 {
		return nil
	}
	st.Staging, st.Tests = nil, nil // test copies are scratch: gone with the process
	return t.save(st)
}

// failover runs a recovery operation on the target (a task's body).
func (t *target) failover(ctx context.Context, group string, req wire.FailoverRequest) error {
	switch req.Mode {
	case "test":
		return t.testFailover(group, req.Point)
	case "cleanup":
		return t.cleanup(group)
	case "disaster", "planned":
		return t.promote(ctx, group, req)
	}
	return fmt.Errorf("%w: failover mode %q: want test, cleanup, disaster or planned", ErrInvalid, req.Mode)
}

// promote makes the latest complete point the writable disks: a staged
// cycle is rolled back (R4) and the disks unprotected. Planned checks
// the point is the one the source's final sync made.
func (t *target) promote(ctx context.Context, group string, req wire.FailoverRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return err
	}
	if st.State != targetReceiving {
		return fmt.Errorf("%w: replica %s is %s", ErrState, group, st.State)
	}
	last := st.last()
	if last.Seq == 0 {
		return fmt.Errorf("%w: replica %s has no complete point yet", ErrState, group)
	}
	if req.Mode == "planned" && (req.Point != last.Seq || st.Staging != nil) {
		return fmt.Errorf("%w: planned failover expected point %d, the target's last is %d", ErrState, req.Point, last.Seq)
	}
	for _, rd := range st.Disks {
		d, err := t.h.Disk(rd.Name)
		if err != nil {
			return err
		}
		if st.Staging != nil {
			if err := revertLive(ctx, d, last.Snapshots[rd.Name]); err != nil {
				return err
			}
		}
	}
	st.Staging = nil
	st.State = targetFailedOver
	if err := t.save(st); err != nil {
		return err
	}
	for _, rd := range st.Disks {
		t.h.Unprotect(rd.Name)
	}
	return nil
}

// testFailover exports a scratch copy of every disk at point (0: the
// latest) as DISK-test, while cycles keep landing.
func (t *target) testFailover(group string, point uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return err
	}
	if len(st.Tests) > 0 {
		return fmt.Errorf("%w: a test failover of %s runs already (failover --cleanup ends it)", ErrState, group)
	}
	if point == 0 {
		point = st.last().Seq
	}
	if !st.hasPoint(point) {
		return fmt.Errorf("%w: replica %s has no point %d", ErrState, group, point)
	}
	st.Tests = map[string]string{}
	var made []*testCopy
	for _, rd := range st.Disks {
		c, err := t.startTest(group, rd.Name, point)
		if err != nil {
			for _, c := range made {
				t.stopTest(c)
			}
			return err
		}
		made = append(made, c)
		st.Tests[rd.Name] = c.export
	}
	return t.save(st)
}

func (st *replicaState) hasPoint(seq uint64) bool {
	for _, p := range st.Points {
		if p.Seq == seq {
			return true
		}
	}
	return false
}

func (t *target) startTest(group, name string, point uint64) (*testCopy, error) {
	d, err := t.h.Disk(name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(t.store.dir, group+"."+name+".redo")
	c, err := newTestCopy(d, group, name, point, path)
	if err != nil {
		return nil, err
	}
	if err := t.h.AddExport(c.export, c.open); err != nil {
		c.close()
		return nil, err
	}
	t.tests[c.export] = c
	return c, nil
}

func (t *target) stopTest(c *testCopy) error {
	t.h.RemoveExport(c.export)
	delete(t.tests, c.export)
	return c.close()
}

// cleanup ends a test failover: exports removed, redo files deleted.
func (t *target) cleanup(group string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return err
	}
	var errs []error
	for _, exp := range st.Tests {
		if c := t.tests[exp]; c != nil {
			errs = append(errs, t.stopTest(c))
		}
	}
	st.Tests = nil
	return errors.Join(append(errs, t.save(st))...)
}

// pinned: a test failover holds point seq of group (retention skips it).
func (t *target) pinned(group string, seq uint64) bool {
	for _, c := range t.tests {
		if c.group == group && c.point == seq {
			return true
		}
	}
	return false
}

// writesSincePoint reports whether the group's disks took writes after
// its last point (CBT through a scratch snapshot).
func (t *target) writesSincePoint(ctx context.Context, st *replicaState) (bool, error) {
	last := st.last()
	for _, rd := range st.Disks {
		d, err := t.h.Disk(rd.Name)
		if err != nil {
			return false, err
		}
		areas, err := changedSince(ctx, d, last.Snapshots[rd.Name])
		if err != nil {
			return false, err
		}
		if len(areas) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// demote turns a failed-over replica back into one receiving from the
// source (resync --winner source): its writes since the last point are
// kept in a snapshot, never discarded, then the disks return to the
// point and are protected again (R7).
func (t *target) demote(ctx context.Context, group string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return err
	}
	if st.State != targetFailedOver {
		return fmt.Errorf("%w: replica %s is %s, not failed over", ErrState, group, st.State)
	}
	last := st.last()
	keep := keptName()
	for _, rd := range st.Disks {
		t.h.Protect(rd.Name, "replica of "+group)
		d, err := t.h.Disk(rd.Name)
		if err != nil {
			return err
		}
		if _, err := snapshotIdle(ctx, d, keep, "writes of the losing side, kept by resync"); err != nil && !errors.Is(err, disk.ErrExists) {
			return err
		}
		if err := revertLive(ctx, d, last.Snapshots[rd.Name]); err != nil {
			return err
		}
	}
	st.State = targetReceiving
	return t.save(st)
}

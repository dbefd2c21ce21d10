package api

import (
	"fmt"
	"net/http"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// snapErr classifies engine errors of snapshot operations, where
// ErrNotFound and ErrExists are about the snapshot.
func snapErr(err error) error {
	if err == nil {
		return nil
	}
	p := toProblem(err, aboutSnapshot)
	return &problemError{p}
}

func (s *Server) listSnapshots(r *http.Request) (int, any, error) {
	d, _, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, snapshots(d.Snapshots()), nil
}

func (s *Server) findSnapshot(r *http.Request) (*disk.Disk, disk.SnapshotInfo, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return nil, disk.SnapshotInfo{}, err
	}
	id := r.PathValue("snap")
	for _, si := range d.Snapshots() {
		if si.ID == id {
			return d, si, nil
		}
	}
	return nil, disk.SnapshotInfo{}, snapErr(fmt.Errorf("disk %s: snapshot %s: %w", name, id, disk.ErrNotFound))
}

func (s *Server) getSnapshot(r *http.Request) (int, any, error) {
	_, si, err := s.findSnapshot(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, snapshot(si), nil
}

// createSnapshot: the engine serializes snapshots of one disk under its
// barrier, so concurrent requests both succeed (or one gets a conflict on
// a duplicate ID).
func (s *Server) createSnapshot(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	var req wire.CreateSnapshotRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.ID != "" {
		if err := disk.ValidName(req.ID); err != nil {
			return 0, nil, badRequest(err.Error())
		}
	}
	si, err := d.CreateSnapshot(req.ID, req.Description)
	if err != nil {
		return 0, nil, snapErr(fmt.Errorf("disk %s: %w", name, err))
	}
	s.log.Info("snapshot created", "disk", name, "snapshot", si.ID, "changeId", si.ChangeID)
	return http.StatusCreated, snapshot(si), nil
}

// deleteSnapshot starts the consolidation and answers 202 with its task.
func (s *Server) deleteSnapshot(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	id := r.PathValue("snap")
	t, err := d.DeleteSnapshot(id)
	if err != nil {
		return 0, nil, snapErr(fmt.Errorf("disk %s: %w", name, err))
	}
	if s.tickets != nil {
		s.tickets.RevokeExport(name, id)
	}
	e := s.tasks.add(wire.JobConsolidate, "consolidate", name, id, t)
	s.log.Info("snapshot deleted, consolidating", "disk", name, "snapshot", id, "task", e.id)
	return http.StatusAccepted, e.view(), nil
}

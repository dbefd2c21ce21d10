package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// cloneDisk is POST /v1/disks/{disk}/clone.
func (s *Server) cloneDisk(r *http.Request) (int, any, error) {
	src := r.PathValue("disk")
	if err := disk.ValidName(src); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	var req wire.CloneRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if err := disk.ValidName(req.Name); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	if req.Job {
		return s.cloneJob(src, req)
	}
	d, st, err := s.h.Clone(r.Context(), src, req.Snapshot, req.Name, req.Linked)
	if err != nil {
		if req.Snapshot != "" {
			return 0, nil, snapErr(fmt.Errorf("clone %s@%s: %w", src, req.Snapshot, err))
		}
		return 0, nil, fmt.Errorf("clone %s: %w", src, err)
	}
	s.log.Info("disk cloned", "disk", req.Name, "source", src, "snapshot", req.Snapshot, "linked", req.Linked,
		"reflinked", st.Reflinked, "copied", st.Copied)
	wd, err := s.describe(req.Name, d)
	return http.StatusCreated, wire.CloneResult{Disk: wd, Stats: wire.CopyStats(st)}, err
}

// cloneJob runs a clone as a task and job (CloneRequest.Job): the
// console shows it among the jobs. A missing source or snapshot is
// refused at once; the rest fails the job.
func (s *Server) cloneJob(src string, req wire.CloneRequest) (int, any, error) {
	sd, err := s.h.Disk(src)
	if err != nil {
		return 0, nil, fmt.Errorf("clone %s: %w", src, err)
	}
	size, found := sd.Size(), req.Snapshot == ""
	for _, si := range sd.Snapshots() {
		if si.ID == req.Snapshot {
			size, found = si.Size, true
		}
	}
	if !found {
		return 0, nil, snapErr(fmt.Errorf("clone %s@%s: %w", src, req.Snapshot, disk.ErrNotFound))
	}
	t := s.StartTask(wire.JobClone, "clone", src, func(ctx context.Context, f *FuncTask) error {
		f.SetProgress(0, size)
		d, st, err := s.h.Clone(ctx, src, req.Snapshot, req.Name, req.Linked)
		if err != nil {
			return fmt.Errorf("clone %s to %s: %w", src, req.Name, err)
		}
		f.SetProgress(size, size)
		s.log.Info("disk cloned", "disk", req.Name, "source", src, "snapshot", req.Snapshot, "linked", req.Linked,
			"reflinked", st.Reflinked, "copied", st.Copied)
		wd, err := s.describe(req.Name, d)
		f.SetSummary(wire.CloneResult{Disk: wd, Stats: wire.CopyStats(st)})
		return err
	})
	return http.StatusAccepted, t, nil
}

// copyExtent is POST /v1/disks/{disk}/copy: the data mover.
func (s *Server) copyExtent(r *http.Request) (int, any, error) {
	dst := r.PathValue("disk")
	if dn, _ := host.SplitExport(dst); strings.Contains(dst, "@") && disk.ValidName(dn) == nil {
		return 0, nil, fmt.Errorf("copy to %s: %w: a snapshot cannot be written", dst, disk.ErrReadOnly)
	}
	if err := disk.ValidName(dst); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	var req wire.CopyRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if err := disk.ValidName(req.Source.Disk); err != nil {
		return 0, nil, badRequest("source: " + err.Error())
	}
	if req.Length < 0 || req.Offset < 0 || req.Source.Offset < 0 {
		return 0, nil, fmt.Errorf("copy: %w: negative offset or length", disk.ErrOutOfRange)
	}
	src := host.CopySource{Datastore: req.Source.Datastore, Disk: req.Source.Disk, Snapshot: req.Source.Snapshot, Offset: req.Source.Offset}
	st, err := s.h.Copy(r.Context(), dst, src, req.Offset, req.Length)
	if err != nil {
		if req.Source.Snapshot != "" {
			return 0, nil, snapErr(fmt.Errorf("copy to %s: %w", dst, err))
		}
		return 0, nil, fmt.Errorf("copy to %s: %w", dst, err)
	}
	return http.StatusOK, wire.CopyResult{Length: req.Length, Stats: wire.CopyStats(st)}, nil
}

// reclaimDisk is POST /v1/disks/{disk}/reclaim: a background task.
func (s *Server) reclaimDisk(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	var req wire.ReclaimRequest
	if err := decodeOptional(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Rate < 0 {
		return 0, nil, badRequest(fmt.Sprintf("rate %d is negative", req.Rate))
	}
	t, err := d.Reclaim(req.Rate)
	if err != nil {
		return 0, nil, fmt.Errorf("disk %s: %w", name, err)
	}
	e := s.tasks.add(wire.JobConsolidate, "reclaim", name, "", t)
	s.log.Info("reclaim started", "disk", name, "rate", req.Rate, "task", e.id)
	return http.StatusAccepted, e.view(), nil
}

package api

import (
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
	e := s.tasks.add("reclaim", name, "", t)
	s.log.Info("reclaim started", "disk", name, "rate", req.Rate, "task", e.id)
	return http.StatusAccepted, e.view(), nil
}

package api

import (
	"encoding/hex"
	"fmt"
	"net/http"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
)

// openDisk resolves the {disk} path value.
func (s *Server) openDisk(r *http.Request) (*disk.Disk, string, error) {
	name := r.PathValue("disk")
	if err := disk.ValidName(name); err != nil {
		return nil, name, badRequest(err.Error())
	}
	d, err := s.h.Disk(name)
	return d, name, err
}

func (s *Server) listDisks(r *http.Request) (int, any, error) {
	names, err := s.h.Datastore().List()
	if err != nil {
		return 0, nil, err
	}
	names, all, err := s.selectDisks(r, names)
	if err != nil {
		return 0, nil, err
	}
	out := []wire.Disk{}
	for _, n := range names {
		d, err := s.h.Disk(n)
		if err != nil {
			wd := wire.Disk{Name: n} // held by another process
			withLabels(&wd, all[n])
			out = append(out, wd)
			continue
		}
		wd, err := s.describe(n, d)
		if err != nil {
			return 0, nil, err
		}
		out = append(out, wd)
	}
	return http.StatusOK, out, nil
}

func (s *Server) getDisk(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	wd, err := s.describe(name, d)
	return http.StatusOK, wd, err
}

func (s *Server) describe(name string, d *disk.Disk) (wire.Disk, error) {
	st, err := d.Stat()
	if err != nil {
		return wire.Disk{}, fmt.Errorf("disk %s: %w", name, err)
	}
	out := wire.Disk{
		Name: name, UUID: st.UUID, Size: st.Size, Allocated: st.Allocated, Grain: st.Grain,
		Unique: st.Unique, Shared: st.Shared, Provision: string(st.Provision),
		Layers: st.Layers, Snapshots: snapshots(st.Snapshots), ChangeID: st.ChangeID,
		OpenExports: s.h.OpenExports(name), Agent: st.Agent,
	}
	ls, err := s.h.Labels()
	if err != nil {
		return wire.Disk{}, err
	}
	withLabels(&out, ls.Get(name))
	if st.CBT != nil {
		out.CBT = &wire.CBT{Granularity: st.CBT.Granularity, DirtyBlocks: st.CBT.DirtyBlocks,
			Epochs: st.CBT.Epochs, OldestChangeID: st.CBT.Oldest.String()}
	}
	if st.Consolidating != "" {
		out.Consolidation = &wire.Consolidation{Snapshot: st.Consolidating,
			Done: st.MergeProgress[0], Total: st.MergeProgress[1]}
	}
	return out, nil
}

func snapshots(in []disk.SnapshotInfo) []wire.Snapshot {
	out := make([]wire.Snapshot, 0, len(in))
	for _, s := range in {
		out = append(out, snapshot(s))
	}
	return out
}

func snapshot(s disk.SnapshotInfo) wire.Snapshot {
	out := wire.Snapshot{ID: s.ID, Description: s.Description, Created: s.Created, Size: s.Size, ChangeID: s.ChangeID}
	if s.TreeBlockSize != 0 {
		out.Root, out.TreeBlockSize = hex.EncodeToString(s.Root[:]), s.TreeBlockSize
	}
	return out
}

func (s *Server) createDisk(r *http.Request) (int, any, error) {
	var req wire.CreateDiskRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if err := validateCreate(req); err != nil {
		return 0, nil, err
	}
	prov, err := disk.ParseProvision(req.Provision)
	if err != nil {
		return 0, nil, badRequest(err.Error())
	}
	opt := disk.Options{Grain: req.Grain, DisableCBT: req.DisableCBT, CBT: cbt.Config{Granularity: req.CBTGranularity}, Provision: prov}
	d, err := s.h.Create(req.Name, req.Size, opt)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("disk created", "disk", req.Name, "size", req.Size)
	wd, err := s.describe(req.Name, d)
	return http.StatusCreated, wd, err
}

// validateCreate checks what the engine reports without a sentinel, so a
// bad request is a 400 and not an internal error.
func validateCreate(req wire.CreateDiskRequest) error {
	if err := disk.ValidName(req.Name); err != nil {
		return badRequest(err.Error())
	}
	if req.Size <= 0 || req.Size%disk.Sector != 0 {
		return badRequest(fmt.Sprintf("size %d is not a positive multiple of %d", req.Size, disk.Sector))
	}
	if req.Grain != 0 && !pow2AtLeast(req.Grain, disk.Sector) {
		return badRequest(fmt.Sprintf("grain %d is not a power of two ≥ %d", req.Grain, disk.Sector))
	}
	grain := int64(disk.DefaultGrain)
	if req.Grain != 0 {
		grain = req.Grain
	}
	if (req.Size+grain-1)/grain > 1<<32-1 {
		return badRequest(fmt.Sprintf("size %d too large for grain %d", req.Size, grain))
	}
	g := req.CBTGranularity
	if g != 0 && (!pow2AtLeast(g, disk.Sector) || g > cbt.DefaultRegionSize) {
		return badRequest(fmt.Sprintf("CBT granularity %d is not a power of two in [512, %d]", g, cbt.DefaultRegionSize))
	}
	return nil
}

func pow2AtLeast(n, min int64) bool { return n >= min && n&(n-1) == 0 }

func (s *Server) growDisk(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	var req wire.GrowDiskRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Size <= 0 {
		return 0, nil, badRequest(fmt.Sprintf("size %d is not positive", req.Size))
	}
	if err := d.Grow(req.Size); err != nil {
		return 0, nil, fmt.Errorf("disk %s: %w", name, err)
	}
	wd, err := s.describe(name, d)
	return http.StatusOK, wd, err
}

func (s *Server) deleteDisk(r *http.Request) (int, any, error) {
	name := r.PathValue("disk")
	if err := disk.ValidName(name); err != nil {
		return 0, nil, badRequest(err.Error())
	}
	if err := s.h.Delete(name); err != nil {
		return 0, nil, err
	}
	if s.tickets != nil {
		s.tickets.RevokeExport(name, "")
	}
	s.log.Info("disk deleted", "disk", name)
	return http.StatusNoContent, nil, nil
}

// updateDisk changes a disk's properties (today its guest agent socket).
func (s *Server) updateDisk(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	var req wire.UpdateDiskRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Agent != nil {
		if err := d.SetAgent(*req.Agent); err != nil {
			return 0, nil, fmt.Errorf("disk %s: %w", name, err)
		}
		s.log.Info("disk agent set", "disk", name, "agent", *req.Agent)
	}
	wd, err := s.describe(name, d)
	return http.StatusOK, wd, err
}

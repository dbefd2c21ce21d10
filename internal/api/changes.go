package api

import (
	"fmt"
	"net/http"
	"strconv"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// changes is QueryChangedDiskAreas: the snapshot's areas changed since
// changeId ("*" for every allocated area), one page from startOffset;
// leaves=true adds each area's hash-tree leaves (waiting up to wait=).
func (s *Server) changes(r *http.Request) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	snap, since := q.Get("snapshot"), q.Get("changeId")
	if snap == "" || since == "" {
		return 0, nil, badRequest("snapshot and changeId are required (changeId \"*\" lists all allocated areas)")
	}
	var start int64
	if v := q.Get("startOffset"); v != "" {
		if start, err = strconv.ParseInt(v, 10, 64); err != nil || start < 0 {
			return 0, nil, problem(http.StatusBadRequest, wire.ProblemOutOfRange, fmt.Sprintf("startOffset %q is not a non-negative integer", v))
		}
	}
	sv, err := d.OpenSnapshot(snap)
	if err != nil {
		return 0, nil, snapErr(fmt.Errorf("disk %s: %w", name, err))
	}
	defer sv.Close()
	ca, err := sv.ChangedAreas(start, since)
	if err != nil {
		return 0, nil, snapErr(fmt.Errorf("disk %s@%s: %w", name, snap, err))
	}
	out := changedAreas(ca)
	if q.Get("leaves") == "true" {
		t, _, err := s.snapshotTree(r, d, name, snap)
		if err != nil {
			return 0, nil, err
		}
		if err := addLeaves(&out, t); err != nil {
			return 0, nil, snapErr(fmt.Errorf("disk %s@%s: %w", name, snap, err))
		}
	}
	return http.StatusOK, out, nil
}

func changedAreas(ca *disk.ChangedAreas) wire.ChangedAreas {
	out := wire.ChangedAreas{StartOffset: ca.StartOffset, Length: ca.Length, ChangedArea: make([]wire.Area, 0, len(ca.ChangedArea))}
	for _, a := range ca.ChangedArea {
		out.ChangedArea = append(out.ChangedArea, wire.Area{Start: a.Start, Length: a.Length})
	}
	return out
}

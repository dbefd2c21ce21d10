package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// compareAndWrite is ATS: the engine compares and writes under the
// grains' locks (docs/format.md, "Compare-and-write"). A miscompare is a
// 409 whose problem carries the current bytes.
func (s *Server) compareAndWrite(r *http.Request) (int, any, error) {
	if name := r.PathValue("disk"); strings.Contains(name, "@") {
		return 0, nil, problem(http.StatusBadRequest, wire.ProblemInvalidRequest,
			fmt.Sprintf("%s: snapshots are read-only: compare-and-write needs a live disk", name))
	}
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	var req wire.CompareAndWriteRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	err = d.CompareAndWrite(req.Offset, req.Expected, req.New)
	var me *disk.MiscompareError
	if errors.As(err, &me) {
		return 0, nil, &problemError{wire.Problem{Type: wire.ProblemMiscompare, Title: titles[wire.ProblemMiscompare],
			Status: http.StatusConflict, Detail: fmt.Sprintf("disk %s: %v", name, err), Current: me.Current}}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("disk %s: compare-and-write: %w", name, err)
	}
	return http.StatusOK, wire.CompareAndWriteResult{Offset: req.Offset, Length: int64(len(req.New))}, nil
}

package api

import (
	"encoding/json"
	"errors"
	"net/http"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// problemError carries a problem document through handler code.
type problemError struct{ p wire.Problem }

// Error implements error.
func (e *problemError) Error() string { return e.p.Type + ": " + e.p.Detail }

func problem(status int, typ, detail string) error {
	return &problemError{wire.Problem{Type: typ, Title: titles[typ], Status: status, Detail: detail}}
}

// NewProblem is an error that the API answers as the problem document of
// type typ (a wire.Problem* code) with status and detail: for handlers
// that services mount with Route.
func NewProblem(status int, typ, detail string) error { return problem(status, typ, detail) }

// ProblemOf is the problem document the API answers for err.
func ProblemOf(err error) wire.Problem { return toProblem(err, aboutDisk) }

func badRequest(detail string) error {
	return problem(http.StatusBadRequest, wire.ProblemInvalidRequest, detail)
}

var titles = map[string]string{
	wire.ProblemDiskNotFound:        "disk not found",
	wire.ProblemSnapshotNotFound:    "snapshot not found",
	wire.ProblemTaskNotFound:        "task not found",
	wire.ProblemTicketNotFound:      "ticket not found",
	wire.ProblemDiskExists:          "disk already exists",
	wire.ProblemSnapshotExists:      "snapshot already exists",
	wire.ProblemChangeIDInvalid:     "change ID invalid: a full backup is needed",
	wire.ProblemDiskBusy:            "disk busy",
	wire.ProblemInvalidRequest:      "invalid request",
	wire.ProblemOutOfRange:          "out of range",
	wire.ProblemUnauthorized:        "unauthorized",
	wire.ProblemCorrupt:             "disk data failed validation",
	wire.ProblemNoSpace:             "no space left in the datastore",
	wire.ProblemUnavailable:         "host shutting down",
	wire.ProblemInternal:            "internal error",
	wire.ProblemLeaseHeld:           "disk leased to another backup",
	wire.ProblemLeaseNotFound:       "lease not found",
	wire.ProblemTooManyTickets:      "too many live tickets",
	wire.ProblemPointNotFound:       "restore point not found",
	wire.ProblemFileNotFound:        "no such file in the restore point",
	wire.ProblemFilesystem:          "filesystem unsupported or damaged",
	wire.ProblemReplicationState:    "replication state forbids it",
	wire.ProblemSplitBrain:          "split-brain: both sides took writes",
	wire.ProblemReplicationNotFound: "replication group not found",
	wire.ProblemNotSupported:        "operation cannot be offloaded here",
	wire.ProblemTooLarge:            "request larger than the maximum segment",
	wire.ProblemReadOnly:            "read-only",
	wire.ProblemMiscompare:          "compare-and-write miscompare: nothing written",
	wire.ProblemJobNotFound:         "job not found",
	wire.ProblemJobEnded:            "job already ended",
	wire.ProblemPolicyNotFound:      "policy not found",
	wire.ProblemPolicyExists:        "policy already exists",
	wire.ProblemRecoveryExists:      "recovery exists",
	wire.ProblemRecoveryNotFound:    "recovery not found",
	wire.ProblemForbidden:           "forbidden",
	wire.ProblemTreePending:         "snapshot hash tree still being computed",
	wire.ProblemNoTree:              "snapshot has no hash tree",
	wire.ProblemRootMismatch:        "replica point's root differs from the source's",
}

// what says which object an engine ErrNotFound or ErrExists is about.
type what int

const (
	aboutDisk what = iota
	aboutSnapshot
)

// toProblem maps engine errors to problem documents by their sentinels.
func toProblem(err error, w what) wire.Problem {
	var pe *problemError
	if errors.As(err, &pe) {
		return pe.p
	}
	status, typ := classify(err, w)
	return wire.Problem{Type: typ, Title: titles[typ], Status: status, Detail: err.Error()}
}

func classify(err error, w what) (int, string) {
	switch {
	case errors.Is(err, host.ErrLeaseHeld):
		return http.StatusConflict, wire.ProblemLeaseHeld
	case errors.Is(err, host.ErrLeaseNotFound):
		return http.StatusNotFound, wire.ProblemLeaseNotFound
	case errors.Is(err, disk.ErrNotFound) && w == aboutSnapshot:
		return http.StatusNotFound, wire.ProblemSnapshotNotFound
	case errors.Is(err, disk.ErrNotFound):
		return http.StatusNotFound, wire.ProblemDiskNotFound
	case errors.Is(err, disk.ErrExists) && w == aboutSnapshot:
		return http.StatusConflict, wire.ProblemSnapshotExists
	case errors.Is(err, disk.ErrExists):
		return http.StatusConflict, wire.ProblemDiskExists
	case errors.Is(err, disk.ErrChangeIDInvalid):
		return http.StatusBadRequest, wire.ProblemChangeIDInvalid
	case errors.Is(err, disk.ErrBusy):
		return http.StatusConflict, wire.ProblemDiskBusy
	case errors.Is(err, disk.ErrOutOfRange):
		return http.StatusBadRequest, wire.ProblemOutOfRange
	case errors.Is(err, disk.ErrInvalidName), errors.Is(err, disk.ErrMisaligned),
		errors.Is(err, disk.ErrShrink), errors.Is(err, disk.ErrCBTDisabled),
		errors.Is(err, disk.ErrCAWLength):
		return http.StatusBadRequest, wire.ProblemInvalidRequest
	case errors.Is(err, disk.ErrNoSpace):
		return http.StatusInsufficientStorage, wire.ProblemNoSpace
	case errors.Is(err, disk.ErrNotSupported):
		return http.StatusNotImplemented, wire.ProblemNotSupported
	case errors.Is(err, disk.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, wire.ProblemTooLarge
	case errors.Is(err, disk.ErrReadOnly):
		return http.StatusConflict, wire.ProblemReadOnly
	case errors.Is(err, disk.ErrInvalid):
		return http.StatusBadRequest, wire.ProblemInvalidRequest
	case errors.Is(err, disk.ErrTreePending):
		return http.StatusServiceUnavailable, wire.ProblemTreePending
	case errors.Is(err, disk.ErrNoTree):
		return http.StatusConflict, wire.ProblemNoTree
	case errors.Is(err, disk.ErrCorrupt):
		return http.StatusInternalServerError, wire.ProblemCorrupt
	case errors.Is(err, host.ErrClosed), errors.Is(err, disk.ErrClosed):
		return http.StatusServiceUnavailable, wire.ProblemUnavailable
	}
	return http.StatusInternalServerError, wire.ProblemInternal
}

func writeProblem(w http.ResponseWriter, p wire.Problem) {
	w.Header().Set("Content-Type", wire.ProblemContentType)
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

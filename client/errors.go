package client

import (
	"errors"
	"fmt"

	wire "github.com/blockwise/blockwise/api"
)

// Sentinels matched by errors.Is against errors returned by the host.
var (
	ErrDiskNotFound     = errors.New("disk not found")
	ErrSnapshotNotFound = errors.New("snapshot not found")
	ErrTaskNotFound     = errors.New("task not found")
	ErrTicketNotFound   = errors.New("ticket not found")
	ErrExists           = errors.New("already exists")
	ErrChangeIDInvalid  = errors.New("change ID invalid: a full backup is needed")
	ErrBusy             = errors.New("busy")
	ErrInvalidRequest   = errors.New("invalid request")
	ErrOutOfRange       = errors.New("out of range")
	ErrUnauthorized     = errors.New("unauthorized")
	ErrCorrupt          = errors.New("disk data failed validation")
	ErrNoSpace          = errors.New("no space left in the datastore") // 507; retry once space is freed
	ErrUnavailable      = errors.New("host unavailable")
	ErrInternal         = errors.New("internal host error")
	// ErrLeaseHeld: the disk is leased to another backup (the error's
	// detail names the holder). Not ErrBusy: retrying will not help
	// before that backup ends.
	ErrLeaseHeld     = errors.New("disk leased to another backup")
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrTooManyTickets: the host holds its maximum of live tickets;
	// revoke some (or let them expire) and ask again.
	ErrTooManyTickets = errors.New("too many live tickets on the host")
	// ErrReplicationState: the replication group's state forbids the
	// operation (failed over, a test failover running, no such point).
	ErrReplicationState = errors.New("replication state forbids it")
	// ErrSplitBrain: both sides took writes since their common point;
	// `blockwise replication resync --winner SITE` decides.
	ErrSplitBrain = errors.New("split-brain")
	// ErrReplicationNotFound is an unknown replication group.
	ErrReplicationNotFound = errors.New("replication group not found")
	// ErrNotSupported: the host cannot offload the request (a copy from
	// another datastore, a fast zero it would have to write). Nothing was
	// changed: fall back to moving the data yourself (over NBD).
	ErrNotSupported = errors.New("operation cannot be offloaded by the host")
	// ErrTooLarge: a copy longer than the host's maximum segment
	// (HostInfo.Offload.MaxCopySegment).
	ErrTooLarge = errors.New("request larger than the host's maximum segment")
	// ErrReadOnly: a write aimed at a snapshot.
	ErrReadOnly    = errors.New("read-only")
	ErrJobNotFound = errors.New("job not found")
	// ErrJobEnded: the job has already ended (cancel).
	ErrJobEnded       = errors.New("job already ended")
	ErrPolicyNotFound = errors.New("policy not found")
	// ErrRecoveryExists: the target disk has a recovery running, or a
	// stopped one to resume; it matches ErrExists.
	ErrRecoveryExists = errors.New("recovery exists")
	// ErrRecoveryNotFound: no recovery into that disk to resume (or the
	// host runs none: serve without --points-repo).
	ErrRecoveryNotFound = errors.New("recovery not found")
	// ErrPolicyExists: a policy of that name exists; it matches ErrExists.
	ErrPolicyExists = errors.New("policy already exists")
	// ErrTreePending: the snapshot's hash tree is still being computed
	// (SnapshotRoot waits it out; a single ask with a short wait may
	// see it).
	ErrTreePending = errors.New("snapshot hash tree still being computed")
	// ErrNoTree: the snapshot has no hash tree and will get none (the
	// disk keeps no tree: hash tree off, or CBT disabled).
	ErrNoTree = errors.New("snapshot has no hash tree")
	// ErrRootMismatch: a replica point's hash-tree root differed from
	// the source snapshot's; the point was not made.
	ErrRootMismatch = errors.New("replica point's root differs from the source's")
)

// ErrNotFound matches ErrDiskNotFound, ErrSnapshotNotFound, ErrTaskNotFound,
// ErrTicketNotFound, ErrJobNotFound and ErrPolicyNotFound.
var ErrNotFound = errors.New("not found")

var sentinels = map[string][]error{
	wire.ProblemDiskNotFound:        {ErrDiskNotFound, ErrNotFound},
	wire.ProblemSnapshotNotFound:    {ErrSnapshotNotFound, ErrNotFound},
	wire.ProblemTaskNotFound:        {ErrTaskNotFound, ErrNotFound},
	wire.ProblemTicketNotFound:      {ErrTicketNotFound, ErrNotFound},
	wire.ProblemDiskExists:          {ErrExists},
	wire.ProblemSnapshotExists:      {ErrExists},
	wire.ProblemChangeIDInvalid:     {ErrChangeIDInvalid},
	wire.ProblemDiskBusy:            {ErrBusy},
	wire.ProblemInvalidRequest:      {ErrInvalidRequest},
	wire.ProblemOutOfRange:          {ErrOutOfRange},
	wire.ProblemUnauthorized:        {ErrUnauthorized},
	wire.ProblemCorrupt:             {ErrCorrupt},
	wire.ProblemNoSpace:             {ErrNoSpace},
	wire.ProblemUnavailable:         {ErrUnavailable},
	wire.ProblemInternal:            {ErrInternal},
	wire.ProblemLeaseHeld:           {ErrLeaseHeld},
	wire.ProblemLeaseNotFound:       {ErrLeaseNotFound, ErrNotFound},
	wire.ProblemTooManyTickets:      {ErrTooManyTickets},
	wire.ProblemPointNotFound:       {ErrNotFound},
	wire.ProblemFileNotFound:        {ErrNotFound},
	wire.ProblemFilesystem:          {ErrCorrupt},
	wire.ProblemReplicationState:    {ErrReplicationState},
	wire.ProblemSplitBrain:          {ErrSplitBrain},
	wire.ProblemReplicationNotFound: {ErrReplicationNotFound, ErrNotFound},
	wire.ProblemNotSupported:        {ErrNotSupported},
	wire.ProblemTooLarge:            {ErrTooLarge, ErrInvalidRequest},
	wire.ProblemReadOnly:            {ErrReadOnly, ErrInvalidRequest},
	wire.ProblemForbidden:           {ErrUnauthorized},
	wire.ProblemJobNotFound:         {ErrJobNotFound, ErrNotFound},
	wire.ProblemJobEnded:            {ErrJobEnded},
	wire.ProblemPolicyNotFound:      {ErrPolicyNotFound, ErrNotFound},
	wire.ProblemPolicyExists:        {ErrPolicyExists, ErrExists},
	wire.ProblemRecoveryExists:      {ErrRecoveryExists, ErrExists},
	wire.ProblemRecoveryNotFound:    {ErrRecoveryNotFound, ErrNotFound},
	wire.ProblemTreePending:         {ErrTreePending},
	wire.ProblemNoTree:              {ErrNoTree},
	wire.ProblemRootMismatch:        {ErrRootMismatch},
}

// Error is a problem document returned by the host.
type Error struct {
	Problem
}

// Error implements error.
func (e *Error) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s (%d %s): %s", e.Title, e.Status, e.Type, e.Detail)
	}
	return fmt.Sprintf("%s (%d %s)", e.Title, e.Status, e.Type)
}

// Is matches the sentinels of the problem's type.
func (e *Error) Is(target error) bool {
	for _, s := range sentinels[e.Type] {
		if s == target {
			return true
		}
	}
	return false
}

// fromStatus covers answers without a problem document (a proxy, say).
func fromStatus(status int, body string) *Error {
	typ := wire.ProblemInternal
	switch {
	case status == 401:
		typ = wire.ProblemUnauthorized
	case status == 409:
		typ = wire.ProblemDiskBusy
	case status == 503:
		typ = wire.ProblemUnavailable
	case status == 507:
		typ = wire.ProblemNoSpace
	case status >= 400 && status < 500:
		typ = wire.ProblemInvalidRequest
	}
	return &Error{Problem{Type: typ, Title: "HTTP error", Status: status, Detail: body}}
}

package client

import wire "github.com/blockwise/blockwise/api"

// The wire documents, shared with the server.
type (
	Disk              = wire.Disk
	CBT               = wire.CBT
	Consolidation     = wire.Consolidation
	Snapshot          = wire.Snapshot
	SnapshotRoot      = wire.SnapshotRoot
	Lease             = wire.Lease
	Area              = wire.Area
	ChangedAreas      = wire.ChangedAreas
	Exports           = wire.Exports
	Task              = wire.Task
	Problem           = wire.Problem
	CreateDiskRequest = wire.CreateDiskRequest
	UpdateDiskRequest = wire.UpdateDiskRequest
	CloneRequest      = wire.CloneRequest
	CloneResult       = wire.CloneResult
	CopyRequest       = wire.CopyRequest
	CopySource        = wire.CopySource
	CopyResult        = wire.CopyResult
	CopyStats         = wire.CopyStats
)

// Task states.
const (
	TaskQueued  = wire.TaskQueued
	TaskRunning = wire.TaskRunning
	TaskDone    = wire.TaskDone
	TaskFailed  = wire.TaskFailed
)

// AllChanges as the change ID lists every allocated area (full backup).
const AllChanges = "*"

// Transport documents.
type (
	HostInfo   = wire.HostInfo
	Attachment = wire.Attachment
	Ticket     = wire.Ticket
)

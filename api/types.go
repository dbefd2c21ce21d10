package api

import (
	_ "embed"
	"encoding/json"
	"time"
)

// OpenAPI is the OpenAPI 3 document of the API, served at /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// CreateDiskRequest is the body of POST /v1/disks. Zero values pick the
// engine's defaults (4 KiB grain, 64 KiB CBT granularity).
type CreateDiskRequest struct {
	Name           string `json:"name"`
	Size           int64  `json:"size"`
	CBTGranularity int64  `json:"cbtGranularity,omitempty"`
	Grain          int64  `json:"grain,omitempty"`
	DisableCBT     bool   `json:"disableCbt,omitempty"`
	// Provision is thin (the default, also ""), lazy-zeroed or eager-zeroed.
	Provision string `json:"provision,omitempty"`
}

// GrowDiskRequest is the body of POST /v1/disks/{disk}/grow.
type GrowDiskRequest struct {
	Size int64 `json:"size"`
}

// Disk describes a disk.
type Disk struct {
	Name      string `json:"name"`
	UUID      string `json:"uuid"`
	Size      int64  `json:"size"`
	Allocated int64  `json:"allocated"`
	// Unique is allocated space no snapshot and no other disk shares;
	// Shared is allocated space in layers a linked clone shares.
	Unique        int64          `json:"unique"`
	Shared        int64          `json:"shared"`
	Provision     string         `json:"provision"`
	Grain         int64          `json:"grain"`
	Layers        int            `json:"layers"`
	Snapshots     []Snapshot     `json:"snapshots"`
	ChangeID      string         `json:"changeId,omitempty"`
	CBT           *CBT           `json:"cbt,omitempty"`
	Consolidation *Consolidation `json:"consolidation,omitempty"`
	OpenExports   int            `json:"openExports"`
	// Labels are the operator's key=value pairs (PUT or PATCH
	// /v1/disks/{disk}/labels), which policies select sources by.
	Labels map[string]string `json:"labels"`
	// Agent is the guest agent socket of the VM using the disk: backups
	// of the disk quiesce the guest through it (PATCH /v1/disks/{disk}).
	Agent string `json:"agent,omitempty"`
}

// UpdateDiskRequest is the body of PATCH /v1/disks/{disk}: the fields
// present change, the others stay. Agent "" forgets the socket.
type UpdateDiskRequest struct {
	Agent *string `json:"agent,omitempty"`
}

// CBT is the changed block tracking state of a disk (absent when disabled).
type CBT struct {
	Granularity    int64  `json:"granularity"`
	DirtyBlocks    uint64 `json:"dirtyBlocks"`
	Epochs         int    `json:"epochs"`
	OldestChangeID string `json:"oldestChangeId"`
}

// Consolidation is a snapshot deletion still merging its delta.
type Consolidation struct {
	Snapshot string `json:"snapshot"`
	Done     int64  `json:"done"`  // grains merged
	Total    int64  `json:"total"` // grains to merge
}

// CreateSnapshotRequest is the body of POST /v1/disks/{disk}/snapshots;
// an empty ID lets the host pick one.
type CreateSnapshotRequest struct {
	ID          string `json:"id,omitempty"`
	Description string `json:"description,omitempty"`
}

// Snapshot describes a snapshot.
type Snapshot struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Size        int64     `json:"size"`
	ChangeID    string    `json:"changeId,omitempty"`
	// Root is the lower-case hex of the snapshot image's hash-tree root
	// (docs/format.md H3), TreeBlockSize its leaf unit (the CBT
	// granularity); both absent while the host still computes the tree
	// (GET .../snapshots/{snap}/root?wait= waits for it) or when the
	// disk keeps none.
	Root          string `json:"root,omitempty"`
	TreeBlockSize int    `json:"treeBlockSize,omitempty"`
}

// SnapshotRoot answers GET /v1/disks/{disk}/snapshots/{snap}/root: the
// hash-tree root (lower-case hex, docs/format.md H3) of the snapshot's
// image of Size bytes, with leaves of BlockSize bytes.
type SnapshotRoot struct {
	Root      string `json:"root"`
	BlockSize int    `json:"blockSize"`
	Size      int64  `json:"size"`
}

// Area is one changed area, in bytes.
type Area struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
}

// ChangedAreas is VMware's DiskChangeInfo: the changed areas within
// [StartOffset, StartOffset+Length). Ask again from StartOffset+Length
// until the disk's size is reached.
type ChangedAreas struct {
	StartOffset int64  `json:"startOffset"`
	Length      int64  `json:"length"`
	ChangedArea []Area `json:"changedArea"`
	// Leaves (asked with leaves=true) are, per area, the hash-tree leaves
	// (lower-case hex, docs/format.md H1) of the snapshot's tree blocks
	// the area covers, in order: Leaves[i][0] is block
	// ChangedArea[i].Start/blockSize. Area stays comparable.
	Leaves [][]string `json:"leaves,omitempty"`
}

// Exports names the NBD export of a disk or snapshot and the URIs that
// reach it, preferred first.
type Exports struct {
	Export string   `json:"export"`
	URIs   []string `json:"uris"`
}

// Task states.
const (
	TaskQueued  = "queued"
	TaskRunning = "running"
	TaskDone    = "done"
	TaskFailed  = "failed"
)

// Task is a long operation, such as a snapshot consolidation.
type Task struct {
	ID       string     `json:"id"`
	Kind     string     `json:"kind"`
	Disk     string     `json:"disk"`
	Snapshot string     `json:"snapshot,omitempty"`
	State    string     `json:"state"`
	Done     int64      `json:"done"`
	Total    int64      `json:"total"`
	Error    string     `json:"error,omitempty"`
	Created  time.Time  `json:"created"`
	Finished *time.Time `json:"finished,omitempty"`
	// Job is the task's record in the job history (GET /v1/jobs/{id}).
	Job string `json:"job,omitempty"`
}

// Ended reports whether the task is done or failed.
func (t Task) Ended() bool { return t.State == TaskDone || t.State == TaskFailed }

// Problem is an RFC 7807 problem document; Type is one of the Problem*
// codes, stable across versions.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Current is the bytes a compare-and-write found (type miscompare).
	Current []byte `json:"current,omitempty"`
}

// Problem type codes.
const (
	ProblemDiskNotFound     = "disk-not-found"
	ProblemSnapshotNotFound = "snapshot-not-found"
	ProblemTaskNotFound     = "task-not-found"
	ProblemTicketNotFound   = "ticket-not-found"
	ProblemDiskExists       = "disk-exists"
	ProblemSnapshotExists   = "snapshot-exists"
	ProblemChangeIDInvalid  = "change-id-invalid"
	ProblemDiskBusy         = "disk-busy"
	ProblemInvalidRequest   = "invalid-request"
	ProblemOutOfRange       = "out-of-range"
	ProblemUnauthorized     = "unauthorized"
	ProblemCorrupt          = "disk-corrupt"
	ProblemNoSpace          = "no-space" // 507: the datastore is full; retry once space is freed
	ProblemUnavailable      = "unavailable"
	ProblemInternal         = "internal"
	ProblemLeaseHeld        = "lease-held"
	ProblemLeaseNotFound    = "lease-not-found"
	ProblemTooManyTickets   = "too-many-tickets"      // 429: the host holds its maximum of live tickets
	ProblemPointNotFound    = "point-not-found"       // no such restore point, or the host serves none
	ProblemFileNotFound     = "file-not-found"        // no such path in the restore point
	ProblemFilesystem       = "filesystem-unreadable" // 422: the volume's filesystem is unsupported or damaged
	// ProblemReplicationState: 409, the replication group's state forbids
	// the operation (failed over, paused, a point that does not exist).
	ProblemReplicationState = "replication-state"
	// ProblemSplitBrain: 409, both sides took writes since their last
	// common point; `resync --winner SITE` decides.
	ProblemSplitBrain = "split-brain"
	// ProblemReplicationNotFound: 404, no such replication group.
	ProblemReplicationNotFound = "replication-not-found"
	ProblemNotSupported        = "offload-not-supported"
	ProblemTooLarge            = "too-large"
	ProblemReadOnly            = "read-only"
	ProblemForbidden           = "forbidden"
	// ProblemTreePending: 503, the snapshot's hash tree is still being
	// computed (after a snapshot, or rebuilt after a crash); ask again.
	ProblemTreePending = "tree-pending"
	// ProblemNoTree: 409, the snapshot has no hash tree and will get
	// none (the disk keeps no tree: hash tree off, or CBT disabled).
	ProblemNoTree = "tree-unavailable"
	// ProblemRootMismatch: 409, a replica point's hash-tree root is not
	// the source snapshot's: the target did not make the point and drops
	// the staged cycle, so the next attempt resends it whole.
	ProblemRootMismatch = "replica-root-mismatch"
)

// CloneRequest is the body of POST /v1/disks/{disk}/clone: make disk Name
// from the source disk's snapshot (required for a linked clone; a full
// clone without one copies a temporary snapshot of the live disk).
type CloneRequest struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot,omitempty"`
	Linked   bool   `json:"linked,omitempty"`
	// Job runs the clone in the background: the answer is 202 with the
	// task (its Job in the job history, whose summary is the
	// CloneResult) instead of 201 once the clone is done.
	Job bool `json:"job,omitempty"`
}

// CopyStats counts the bytes an offloaded copy moved, by how.
type CopyStats struct {
	Reflinked int64 `json:"reflinked"` // extents shared, no data moved
	Copied    int64 `json:"copied"`    // copy_file_range inside the kernel
	Written   int64 `json:"written"`   // read and written by the host
	Zeroed    int64 `json:"zeroed"`    // holes of the source
}

// CloneResult answers a clone: the new disk and how its data was copied.
type CloneResult struct {
	Disk  Disk      `json:"disk"`
	Stats CopyStats `json:"stats"`
}

// CopySource names the extent a copy reads: a disk, optionally one of
// its snapshots, optionally in a datastore (its datastoreId, GET /v1/host):
// one that is not the host's cannot be offloaded (offload-not-supported).
type CopySource struct {
	Datastore string `json:"datastore,omitempty"`
	Disk      string `json:"disk"`
	Snapshot  string `json:"snapshot,omitempty"`
	Offset    int64  `json:"offset"`
}

// CopyRequest is the body of POST /v1/disks/{disk}/copy (the data mover,
// XCOPY): Length bytes from Source to Offset of the disk, at most
// MaxCopySegment (GET /v1/host, offload.maxCopySegment), sector-aligned.
type CopyRequest struct {
	Source CopySource `json:"source"`
	Offset int64      `json:"offset"`
	Length int64      `json:"length"`
}

// CopyResult answers a copy.
type CopyResult struct {
	Length int64     `json:"length"`
	Stats  CopyStats `json:"stats"`
}

// ReclaimRequest is the body of POST /v1/disks/{disk}/reclaim: give back
// the space of all-zero grains in the background (a task of kind
// "reclaim"), examining at most Rate bytes per second (0: unbounded).
type ReclaimRequest struct {
	Rate int64 `json:"rate,omitempty"`
}

// ProblemContentType is the media type of problem documents.
const ProblemContentType = "application/problem+json"

// HostInfo is the answer of GET /v1/host: what a backup proxy needs to
// choose a transport. DatastoreID is datastore.meta's id: a proxy reading
// the datastore directly (san) compares it with the directory it mounted.
type HostInfo struct {
	DatastoreID   string          `json:"datastoreId"`
	DatastorePath string          `json:"datastorePath"`
	Space         *DatastoreSpace `json:"space,omitempty"`
	Offload       *Offload        `json:"offload,omitempty"`
}

// Attachment is a snapshot attached through a private unix-socket NBD
// export (the hotadd transport), until DELETE .../attach/{id}.
type Attachment struct {
	ID     string `json:"id"`
	Socket string `json:"socket"`
	Export string `json:"export"`
	URI    string `json:"uri"`
}

// Lease lends a disk to one holder (a backup) until it is released or
// expires: POST /v1/disks/{disk}/lease takes it (409 lease-held, naming
// the holder, while another holds it), PUT .../lease/{id} renews it,
// DELETE .../lease/{id} releases it.
type Lease struct {
	ID       string    `json:"id"`
	Disk     string    `json:"disk"`
	Holder   string    `json:"holder"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
}

// LeaseRequest takes or renews a lease for TTLMillis (bounded to
// [100 ms, 1 h]). Replace names a lease whose holder the caller knows to
// be gone (a killed process of its own host): it is taken over.
type LeaseRequest struct {
	Holder    string `json:"holder,omitempty"`
	TTLMillis int64  `json:"ttlMillis"`
	Replace   string `json:"replace,omitempty"`
}

// CreateTicketRequest is the (optional) body of POST .../tickets.
// TTLSeconds 0 takes the host's default (24 hours).
type CreateTicketRequest struct {
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
}

// Ticket lets one NBD client open one export over TCP, as VMware's
// per-session NBD tickets do: a client certificate signed by the host's
// CA, valid until Expires, until DELETE /v1/tickets/{id}, until the API
// token that created it is revoked, or until the export is gone. The
// PEM fields are in the answer to POST only (the host keeps no client
// key); CACert vouches for the host's NBD certificate when the host
// issued that itself. Written as ca-cert.pem, client-cert.pem and
// client-key.pem they are the directory qemu's tls-creds-x509 and
// libnbd's tls-certificates read.
type Ticket struct {
	ID         string    `json:"id"`
	Export     string    `json:"export"`
	URIs       []string  `json:"uris"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Token      string    `json:"token,omitempty"` // ID of the API token that created it
	CACert     string    `json:"caCert,omitempty"`
	ClientCert string    `json:"clientCert,omitempty"`
	ClientKey  string    `json:"clientKey,omitempty"`
}

// Point is a restore point of the repository the host serves files from.
type Point struct {
	ID   string    `json:"id"`
	Disk string    `json:"disk"`
	Time time.Time `json:"time"`
	Size int64     `json:"size"`
}

// PointFile is an entry of a directory of a restore point: a volume
// (partition, logical volume) above the filesystems, or a file.
type PointFile struct {
	Name        string    `json:"name"`
	Type        string    `json:"type"` // volume, dir, file, symlink, special
	Mode        string    `json:"mode,omitempty"`
	UID         uint32    `json:"uid"`
	GID         uint32    `json:"gid"`
	Size        int64     `json:"size"`
	Mtime       time.Time `json:"mtime,omitzero"`
	Target      string    `json:"target,omitempty"`      // a symlink's
	Description string    `json:"description,omitempty"` // a volume's: type and filesystem
	Error       string    `json:"error,omitempty"`       // a volume that cannot be read
}

// ReplicationDisk is one disk of a replication group: its name on the
// source host and on the target host ("" is the same name).
type ReplicationDisk struct {
	Source string `json:"source"`
	Target string `json:"target,omitempty"`
}

// CreateReplicationRequest is POST /v1/replications on the source host.
type CreateReplicationRequest struct {
	Name  string            `json:"name"`
	Disks []ReplicationDisk `json:"disks"`
	// Target is https://HOST:PORT (with Token, a replication-scoped token
	// of the target, and CACert, the PEM that vouches for its API
	// certificate) or unix:///path/api.sock.
	Target string `json:"target"`
	Token  string `json:"token,omitempty"`
	CACert string `json:"caCert,omitempty"`
	// RPO is a Go duration, 15s to 24h ("" is 15m).
	RPO string `json:"rpo,omitempty"`
	// Keep is how many points the target keeps (0 is 24); KeepWithin
	// keeps every point younger than it, then one an hour (thinning).
	Keep       int    `json:"keep,omitempty"`
	KeepWithin string `json:"keepWithin,omitempty"`
	// BandwidthLimit caps the data sent, bytes a second (0: none).
	BandwidthLimit int64 `json:"bandwidthLimit,omitempty"`
	// Compression on the wire: "zstd" (default) or "none".
	Compression string `json:"compression,omitempty"`
	// Seed: the target disks exist already (restored from a backup, an
	// older replica): compare block checksums and send only differences.
	Seed bool `json:"seed,omitempty"`
}

// Replication states.
const (
	ReplicationOK          = "ok"
	ReplicationSyncing     = "syncing"
	ReplicationPaused      = "paused"
	ReplicationRPOViolated = "rpo-violated"
	ReplicationSplitBrain  = "split-brain"
	ReplicationFailedOver  = "failed-over"
	ReplicationError       = "error"
	ReplicationDemoted     = "demoted"
)

// ReplicationPoint is a complete point: every disk's delta landed.
type ReplicationPoint struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"` // the instant of the source snapshots
	// Snapshots name each disk's snapshot of the point on the host
	// answering (by disk name there).
	Snapshots map[string]string `json:"snapshots"`
}

// CycleStats describe one replication cycle.
type CycleStats struct {
	Seq       uint64    `json:"seq"`
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	Bytes     int64     `json:"bytes"`     // changed bytes sent (before compression)
	WireBytes int64     `json:"wireBytes"` // request bodies as sent
	Rate      float64   `json:"rate"`      // Bytes a second
	Resumed   bool      `json:"resumed,omitempty"`
	Full      bool      `json:"full,omitempty"` // initial sync or seed comparison
}

// Replication is a replication group as its source host sees it.
type Replication struct {
	Name           string            `json:"name"`
	Role           string            `json:"role"` // source
	Disks          []ReplicationDisk `json:"disks"`
	Target         string            `json:"target"`
	RPO            string            `json:"rpo"`
	Keep           int               `json:"keep"`
	KeepWithin     string            `json:"keepWithin,omitempty"`
	BandwidthLimit int64             `json:"bandwidthLimit,omitempty"`
	Compression    string            `json:"compression"`
	State          string            `json:"state"`
	Paused         bool              `json:"paused,omitempty"`
	LastPoint      *ReplicationPoint `json:"lastPoint,omitempty"`
	// LastPointAge is the seconds since the last point's instant.
	LastPointAge float64     `json:"lastPointAge,omitempty"`
	NextCycle    *time.Time  `json:"nextCycle,omitempty"`
	LastCycle    *CycleStats `json:"lastCycle,omitempty"`
	// Cycles are the recent cycles, oldest first.
	Cycles   []CycleStats `json:"cycles,omitempty"`
	Error    string       `json:"error,omitempty"`
	Warnings []string     `json:"warnings,omitempty"`
	Events   []string     `json:"events,omitempty"` // recent, newest last
}

// Replica is a replication group as its target host sees it.
type Replica struct {
	Group  string             `json:"group"`
	State  string             `json:"state"` // ok (receiving), failed-over, demoted
	Disks  []ReplicaDisk      `json:"disks"`
	Points []ReplicationPoint `json:"points"`
	// Staging is the cycle being applied, if any.
	Staging *ReplicaStaging `json:"staging,omitempty"`
	// Tests are the scratch exports of a test failover, by disk.
	Tests map[string]string `json:"tests,omitempty"`
	// WritesSincePoint: the replica disks took writes since the last
	// point (after a failover).
	WritesSincePoint bool `json:"writesSincePoint,omitempty"`
	// Dirty lists, by disk, what this host wrote after the common point
	// when it was turned into a replica by reprotect: the first cycle
	// sends those areas too.
	Dirty map[string][]Area `json:"dirty,omitempty"`
}

// ReplicaDisk is a disk of a replica group.
type ReplicaDisk struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Source string `json:"source,omitempty"` // its name on the source host
}

// ReplicaStaging is a cycle's progress on the target: per disk, the
// offset up to which the delta landed and is durable.
type ReplicaStaging struct {
	Cycle    string           `json:"cycle"`
	Seq      uint64           `json:"seq"`
	Base     uint64           `json:"base"`
	Progress map[string]int64 `json:"progress"`
}

// PutReplicaRequest is PUT /v1/replicas/{group}: the source declares
// (or re-declares) a group on the target.
type PutReplicaRequest struct {
	Disks      []ReplicaDisk `json:"disks"`
	Seed       bool          `json:"seed,omitempty"`
	Keep       int           `json:"keep"`
	KeepWithin string        `json:"keepWithin,omitempty"`
	// Reverse: this host was the group's source and becomes its replica
	// at its point Reverse (reprotect).
	Reverse uint64 `json:"reverse,omitempty"`
}

// BeginCycleRequest is POST /v1/replicas/{group}/cycles.
type BeginCycleRequest struct {
	Cycle string `json:"cycle"`
	Seq   uint64 `json:"seq"`
	Base  uint64 `json:"base"`
}

// CommitCycleRequest is POST /v1/replicas/{group}/cycles/{cycle}/commit.
type CommitCycleRequest struct {
	Time time.Time `json:"time"`
	// Roots are, by target disk name, the hash-tree roots of the
	// source's snapshots of the cycle (docs/format.md H3): the target
	// refuses the point (409 replica-root-mismatch) if its own point's
	// root differs. A disk without a tree on the source is absent.
	Roots map[string]TreeRoot `json:"roots,omitempty"`
}

// TreeRoot is a hash-tree root (lower-case hex) and its leaf unit.
type TreeRoot struct {
	Root      string `json:"root"`
	BlockSize int    `json:"blockSize"`
}

// ChecksumsRequest asks a replica disk's per-block checksums (seeding).
type ChecksumsRequest struct {
	Offset    int64 `json:"offset"`
	Length    int64 `json:"length"`
	BlockSize int64 `json:"blockSize"`
	// Tree asks the hash-tree leaves (docs/format.md H1) of the replica's
	// last point instead of sums of the live disk read whole: BlockSize
	// must be the tree's (else 409 tree-unavailable, and the caller falls
	// back to sums).
	Tree bool `json:"tree,omitempty"`
}

// Checksums are BLAKE3-256 sums (hex) of consecutive blocks.
type Checksums struct {
	Sums []string `json:"sums"`
}

// FailoverRequest is POST /v1/replicas/{group}/failover.
type FailoverRequest struct {
	// Mode: "test", "cleanup", "disaster" or "planned".
	Mode string `json:"mode"`
	// Point: the point of a test failover (0: the latest); for planned,
	// the point the source's final sync made.
	Point uint64 `json:"point,omitempty"`
}

// ResyncRequest is POST /v1/replications/{name}/resync.
type ResyncRequest struct {
	Winner string `json:"winner"` // "source" (this host) or "target"
}

// ReprotectRequest is POST /v1/replicas/{group}/reprotect on the host
// that failed over: reverse the group toward its old source.
type ReprotectRequest struct {
	Target string `json:"target"`
	Token  string `json:"token,omitempty"`
	CACert string `json:"caCert,omitempty"`
	RPO    string `json:"rpo,omitempty"`
}

// Job states. A job is queued, then running, then ends in one of
// succeeded, failed, canceled or interrupted (the host stopped while it
// ran: a crash, a kill, a power loss).
const (
	JobQueued      = "queued"
	JobRunning     = "running"
	JobSucceeded   = "succeeded"
	JobFailed      = "failed"
	JobCanceled    = "canceled"
	JobInterrupted = "interrupted"
)

// Job kinds.
const (
	JobBackup      = "backup"
	JobRestore     = "restore"
	JobPrune       = "prune"
	JobCheck       = "check"
	JobForget      = "forget"
	JobServePoint  = "serve-point"
	JobConsolidate = "consolidate"
	JobReplication = "replication" // a replication or recovery operation (its stage: failover-test, reprotect...)
	JobClone       = "clone"       // a clone run as a job (CloneRequest.Job)
)

// Job is one thing the host ran or runs, kept in its history.
type Job struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Policy string `json:"policy,omitempty"`
	Source string `json:"source,omitempty"` // the disk
	State  string `json:"state"`
	// Attempt counts from 1; a retry of a failed run is a new job with
	// the next attempt number.
	Attempt  int         `json:"attempt,omitempty"`
	Created  time.Time   `json:"created"`
	Started  *time.Time  `json:"started,omitempty"`
	Ended    *time.Time  `json:"ended,omitempty"`
	Progress JobProgress `json:"progress"`
	// Summary is what the CLI prints for the same operation (a backup's
	// summary: its point, changed/read/new/stored bytes, phases).
	Summary json.RawMessage `json:"summary,omitempty"`
	Error   string          `json:"error,omitempty"`
	// LogLines is how many log lines the job has.
	LogLines int `json:"logLines"`
}

// Done reports whether the job has ended.
func (j Job) Done() bool {
	switch j.State {
	case JobQueued, JobRunning:
		return false
	}
	return true
}

// JobProgress is where a job is: its stage, bytes done of total, the
// rate (bytes per second) and the estimated seconds left.
type JobProgress struct {
	Stage      string  `json:"stage,omitempty"`
	Done       int64   `json:"done"`
	Total      int64   `json:"total"`
	Rate       float64 `json:"rate"`
	ETASeconds float64 `json:"etaSeconds"`
	// Stages: seconds spent per finished stage, in order.
	Stages []JobStage `json:"stages,omitempty"`
}

// JobStage is a finished stage and its wall time.
type JobStage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// JobLogLine is one line of a job's log; N counts from 1.
type JobLogLine struct {
	N     int       `json:"n"`
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
}

// Problems of jobs and policies.
const (
	// ProblemJobNotFound: no job of that ID (never run, or past retention).
	ProblemJobNotFound = "job-not-found"
	// ProblemJobEnded: the job has already ended (cancel).
	ProblemJobEnded = "job-ended"
	// ProblemPolicyNotFound: no policy of that name.
	ProblemPolicyNotFound = "policy-not-found"
	// ProblemPolicyExists: a policy of that name exists (create).
	ProblemPolicyExists = "policy-exists"
)

// JobLog is the answer of GET /v1/jobs/{id}/log: the job as it stands
// and its lines after the one asked for.
type JobLog struct {
	Job   Job          `json:"job"`
	Lines []JobLogLine `json:"lines"`
}

// Policy is a protection policy the host runs: which disks, when, to
// which repository, how long points are kept, and how failures are
// retried. Secrets (the repository password, S3 keys) are write-only:
// they are kept by the host in a root-only 0600 file and never returned.
type Policy struct {
	Name    string        `json:"name"`
	Sources PolicySources `json:"sources"`
	// Schedule: a cron expression ("0 2 * * *", or "@daily") read in
	// TimeZone (an IANA name, default UTC), or "@every 15m".
	Schedule   string           `json:"schedule"`
	TimeZone   string           `json:"timeZone,omitempty"`
	Repository PolicyRepository `json:"repository"`
	// Transport is the transport order ("san,hotadd,nbdssl,nbd" if empty).
	Transport string `json:"transport,omitempty"`
	// Quiesce: the guests' freeze around each backup's view.
	Quiesce PolicyQuiesce `json:"quiesce,omitzero"`
	// Retention: forget's keep rules, applied to each source after each
	// successful backup (a zero Retention keeps every point).
	Retention PolicyRetention `json:"retention"`
	// PruneSchedule: when to prune (same syntax as Schedule; "" never).
	PruneSchedule string `json:"pruneSchedule,omitempty"`
	// CheckSchedule: when to check; each check reads the next of
	// CheckGroups groups of packs (check --read-data-subset n/t), so
	// CheckGroups checks read every pack once. 0 groups: no data read.
	CheckSchedule string `json:"checkSchedule,omitempty"`
	CheckGroups   int    `json:"checkGroups,omitempty"`
	// MaxConcurrent bounds this policy's backups running at once
	// (default 1); the host bounds all policies' together too.
	MaxConcurrent int `json:"maxConcurrent,omitempty"`
	// Retries: how many times a failed backup of a source is retried,
	// RetryBackoff apart at first, doubling each time (Go duration).
	Retries      int    `json:"retries,omitempty"`
	RetryBackoff string `json:"retryBackoff,omitempty"`
	// StaleAfter: a source whose last successful backup is older is
	// stale (Go duration; "" is twice the schedule's period).
	StaleAfter string `json:"staleAfter,omitempty"`
	// LimitUploadKiB bounds what a backup sends to the repository (KiB/s).
	LimitUploadKiB int64 `json:"limitUploadKiB,omitempty"`
	Paused         bool  `json:"paused,omitempty"`

	Created time.Time     `json:"created"`
	Status  *PolicyStatus `json:"status,omitempty"` // answers only
}

// PolicySources selects disks by name, by shell glob (path.Match) or by
// label selector ("tier=gold,env!=dev", internal/labels), as they exist
// when a run starts: a disk any of them selects is a source. URIs are
// hypervisor sources, each a source of its own backed up as one job
// (all its drives, one freeze): qemu+unix:///PATH/qmp.sock[?drive=A,B&
// agent=PATH&name=VM], libvirt:///system?domain=NAME[&disk=vda] or
// qemu+ssh://[USER@]HOST[:PORT]/system?domain=NAME[&keyfile=PATH&
// known_hosts=PATH]. A URI may carry no password (ssh takes keyfile=).
type PolicySources struct {
	Disks  []string `json:"disks,omitempty"`
	Globs  []string `json:"globs,omitempty"`
	Labels []string `json:"labels,omitempty"`
	URIs   []string `json:"uris,omitempty"`
}

// PolicyQuiesce is how a policy freezes guests around their views:
// hypervisor sources through their guest agent (the URI's agent=, or
// libvirt's), host disks through the agent property of the disk (`disk
// set --agent`). Mode is off, try (default: else crash-consistent, the
// point saying why) or require (else the backup fails); Timeout bounds
// the freeze (Go duration, default 10s). PreFreeze and PostThaw are
// host commands run by sh -c as the host's user.
type PolicyQuiesce struct {
	Mode      string `json:"mode,omitempty"`
	Timeout   string `json:"timeout,omitempty"`
	PreFreeze string `json:"preFreeze,omitempty"`
	PostThaw  string `json:"postThaw,omitempty"`
}

// PolicyRepository is where a policy's points go. Password, AccessKey and
// SecretKey are accepted on create and edit and never returned.
type PolicyRepository struct {
	// Location: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX].
	Location  string `json:"location"`
	Password  string `json:"password,omitempty"`
	AccessKey string `json:"accessKey,omitempty"`
	SecretKey string `json:"secretKey,omitempty"`
	// HasPassword, HasS3Keys report (in answers) that the host keeps them.
	HasPassword bool `json:"hasPassword,omitempty"`
	HasS3Keys   bool `json:"hasS3Keys,omitempty"`
}

// PolicyRetention is forget's keep rules; Within is a span like "7d".
type PolicyRetention struct {
	Last    int    `json:"last,omitempty"`
	Hourly  int    `json:"hourly,omitempty"`
	Daily   int    `json:"daily,omitempty"`
	Weekly  int    `json:"weekly,omitempty"`
	Monthly int    `json:"monthly,omitempty"`
	Yearly  int    `json:"yearly,omitempty"`
	Within  string `json:"within,omitempty"`
}

// PolicyStatus is how a policy stands.
type PolicyStatus struct {
	NextRun   *time.Time `json:"nextRun,omitempty"`
	NextPrune *time.Time `json:"nextPrune,omitempty"`
	NextCheck *time.Time `json:"nextCheck,omitempty"`
	// KeyReady: the repository's key is derived and held in memory.
	KeyReady bool `json:"keyReady"`
	// KeyError: why the repository could not be opened.
	KeyError string         `json:"keyError,omitempty"`
	Sources  []SourceStatus `json:"sources"`
	// Repository: its size as last measured (after a backup run).
	Repository *RepoSize `json:"repository,omitempty"`
}

// SourceStatus is one source of a policy: a disk, or (Kind "vm") a
// hypervisor source, named by its URI in Disk.
type SourceStatus struct {
	Disk        string     `json:"disk"`
	Kind        string     `json:"kind,omitempty"`
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	LastJob     string     `json:"lastJob,omitempty"`
	LastState   string     `json:"lastState,omitempty"`
	// FailuresSince: failed runs since the last success.
	FailuresSince int  `json:"failuresSince"`
	Stale         bool `json:"stale"`
}

// SourceKindVM is SourceStatus.Kind of a hypervisor source (a URI).
const SourceKindVM = "vm"

// PolicyRunRequest is the body of POST /v1/policies/{name}/run.
type PolicyRunRequest struct {
	// What: "backup" (default), "prune" or "check".
	What string `json:"what,omitempty"`
}

// PolicyRun answers a run: the jobs it started.
type PolicyRun struct {
	Jobs []string `json:"jobs"`
}

// RestoreRequest is the body of POST /v1/policies/{name}/restore: the
// host restores a point of the policy's repository, as a job, to a new
// sparse file on the host (an absolute path that must not exist), to a
// new disk of the host, or (Rollback) into the point's own disk in place,
// writing only what CBT says changed since the point (stop its VM first).
type RestoreRequest struct {
	Point    string `json:"point"` // an ID or unique prefix
	ToFile   string `json:"toFile,omitempty"`
	ToDisk   string `json:"toDisk,omitempty"`
	Rollback bool   `json:"rollback,omitempty"`
}

// RepoSize is a repository's size, logical against stored: Logical
// counts every point's data in full (what the points would take as
// separate full copies), Unique the distinct chunks after dedup, Stored
// the pack files (after compression and encryption, with headers).
type RepoSize struct {
	Points  int       `json:"points"`
	Logical int64     `json:"logical"`
	Unique  int64     `json:"unique"`
	Stored  int64     `json:"stored"`
	At      time.Time `json:"at"`
}

// ConsoleLink is a one-time login link to the web console (POST
// /v1/console/links): Path exchanges Code for a session once, within
// Expires; URLs are Path on each TCP listener of the API.
type ConsoleLink struct {
	Code    string    `json:"code"`
	Path    string    `json:"path"`
	URLs    []string  `json:"urls"`
	Expires time.Time `json:"expires"`
}

// ServePointRequest is the body of POST /v1/policies/{name}/serve-point:
// the host serves the point read-only over NBD on a 0600 unix socket
// (instant recovery) as a job, until the job is canceled. The job's log
// names the NBD URI and the `qemu-img create` line of an overlay.
type ServePointRequest struct {
	Point string `json:"point"`
}

package api

import "time"

// JobRecover is the kind of an instant recovery run by the host
// (POST /v1/recoveries).
const JobRecover = "recover"

// Problems of recoveries.
const (
	// ProblemRecoveryExists: the target disk has a recovery already
	// (running, or stopped and resumable: ask again with resume).
	ProblemRecoveryExists = "recovery-exists"
	// ProblemRecoveryNotFound: resume of a disk with no recovery.
	ProblemRecoveryNotFound = "recovery-not-found"
)

// RecoveryRequest is the body of POST /v1/recoveries: the host serves
// the point read-write over NBD on a 0600 unix socket at once (writes
// kept in an overlay under the datastore), copies it into the new disk
// ToDisk in the background, then switches the export over to that disk
// on the same connections. The job runs until canceled: canceled before
// the switch, the overlay is kept and Resume continues; after it, the job
// ends succeeded.
type RecoveryRequest struct {
	// Point: a point ID (or prefix), or "latest" with Disk.
	Point string `json:"point,omitempty"`
	Disk  string `json:"disk,omitempty"`
	// Policy: the point is in this protection policy's repository,
	// opened with the credentials the host keeps for the policy (sent
	// once, when the policy was created or edited, and never returned);
	// empty: the host's serve --points-repo. No request carries a
	// repository password (docs/overlay.md "Remote requests").
	Policy string `json:"policy,omitempty"`
	// ToDisk: the disk to create and recover into; it names the recovery.
	ToDisk string `json:"toDisk"`
	// Resume continues the stopped (canceled, failed, interrupted by a
	// host restart) recovery into ToDisk; Point may then be left out.
	Resume bool `json:"resume,omitempty"`
	// Workers: concurrent chunk copies (default 4). RateMiB bounds the
	// copy (MiB/s, 0: none). CacheMiB sizes the chunk cache (default 64).
	Workers  int     `json:"workers,omitempty"`
	RateMiB  float64 `json:"rateMiB,omitempty"`
	CacheMiB int     `json:"cacheMiB,omitempty"`
}

// Recovery is a recovery the host knows of (its overlay directory).
type Recovery struct {
	ToDisk string `json:"toDisk"`
	Point  string `json:"point"`
	// Policy: the policy whose repository holds the point ("" the host's
	// --points-repo).
	Policy string `json:"policy,omitempty"`
	// Phase: copying (the overlay holds the guest's writes) or switched
	// (the new disk holds everything).
	Phase string `json:"phase"`
	// Job is the job running it, "" when none is (resume it).
	Job string `json:"job,omitempty"`
	// Socket, Export and URI: where the VM attaches (stable across
	// resumes, so QEMU's reconnect-delay rides over a restart); Qemu is
	// the -drive line.
	Socket  string    `json:"socket"`
	Export  string    `json:"export"`
	URI     string    `json:"uri"`
	Qemu    string    `json:"qemu"`
	Updated time.Time `json:"updated,omitzero"`
}

package backup

import (
	"github.com/blockwise/blockwise/internal/repo"
)

// Summary is what `blockwise backup --json` prints for a disk, and what
// the host's job history keeps of a backup it ran.
type Summary struct {
	ID       string `json:"id"`
	Disk     string `json:"disk"`
	Mode     string `json:"mode"`
	Size     uint64 `json:"size"` // the point's image size
	Reason   string `json:"reason,omitempty"`
	Parent   string `json:"parent,omitempty"`
	ChangeID string `json:"changeId"`
	Changed  int64  `json:"changedBytes"`
	Read     int64  `json:"readBytes"`
	// Lost: bytes read again although unchanged, because the parent's
	// chunks there are in no index file (a lost pack).
	Lost      int64   `json:"lostBytes,omitempty"`
	NewBytes  uint64  `json:"newBytes"`
	Stored    uint64  `json:"storedBytes"`
	Seconds   float64 `json:"seconds"`
	Transport string  `json:"transport"`
	// Phases: seconds per step (see Result.Phases).
	Phases map[string]float64 `json:"phases"`
	// Consistency of the point ("application", "crash"; empty for host
	// disks without quiescing) and why.
	Consistency       string `json:"consistency,omitempty"`
	ConsistencyReason string `json:"consistencyReason,omitempty"`
	// Open: seconds spent opening the repository before the first
	// backup: "unlock" (key derivation) and "index". A host that keeps
	// the repository open reports 0 for its later backups.
	Open map[string]float64 `json:"open"`
	// Root is the hex of the point's hash-tree root (docs/format.md H3),
	// empty when it has none; RootProven: the host's root was equal;
	// RootNote: why not, or how a mismatch healed (Result.RootNote).
	Root       string `json:"root,omitempty"`
	RootProven bool   `json:"rootProven"`
	RootNote   string `json:"rootNote,omitempty"`
	// Reread: bytes read a second time after a root mismatch.
	Reread int64 `json:"rereadBytes,omitempty"`
}

// Summarize describes a finished backup of disk, read through transport.
func Summarize(disk string, res *Result, transport string, ot repo.OpenTimes) Summary {
	s := Summary{ID: res.Manifest.ID.String(), Disk: disk, Mode: res.Mode, Size: res.Manifest.Size, Reason: res.Reason, ChangeID: res.Snapshot.ChangeID,
		Changed: res.AreasBytes, Read: res.ReadBytes, Lost: res.LostBytes, NewBytes: res.Manifest.Stats.NewBytes,
		Stored: res.Manifest.Stats.StoredBytes, Seconds: res.Duration.Seconds(), Transport: transport,
		Consistency: res.Snapshot.Consistency, ConsistencyReason: res.Snapshot.ConsistencyReason}
	if res.Parent != nil {
		s.Parent = res.Parent.ID.String()
	}
	if res.Manifest.Tree != nil {
		s.Root = res.Manifest.Tree.Root
	}
	s.RootProven, s.RootNote, s.Reread = res.RootProven, res.RootNote, res.RereadBytes
	s.Open = map[string]float64{"unlock": ot.Unlock.Seconds(), "index": ot.Index.Seconds()}
	s.Phases = map[string]float64{}
	for _, p := range res.Phases {
		s.Phases[p.Name] = p.Duration.Seconds()
	}
	return s
}

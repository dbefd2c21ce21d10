package console

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"

	wire "github.com/blockwise/blockwise/api"
)

// Replication is what the console reads of the host's replication
// service (internal/replica implements it).
type Replication interface {
	// Groups are the groups this host replicates (it is their source).
	Groups() []wire.Replication
	// Replicas are the groups this host keeps replicas of (the target).
	Replicas() ([]wire.Replica, error)
}

// SetReplication gives the console the host's replication service.
func (c *Console) SetReplication(r Replication) { c.repl.Store(&r) }

// ReplicationPage is the replication page's data.
type ReplicationPage struct {
	Enabled  bool               `json:"enabled"` // the host runs replication
	Groups   []wire.Replication `json:"groups"`
	Replicas []wire.Replica     `json:"replicas"`
}

func (c *Console) replication(*http.Request) (any, error) {
	rp := &ReplicationPage{Groups: []wire.Replication{}, Replicas: []wire.Replica{}}
	r := c.repl.Load()
	if r == nil {
		return rp, nil
	}
	rp.Enabled, rp.Groups = true, (*r).Groups()
	reps, err := (*r).Replicas()
	if err != nil {
		return nil, err
	}
	rp.Replicas = reps
	return rp, nil
}

// replicationDigest sums what the replication page shows of each group
// and replica, leaving out what moves every second (the lag, the next
// cycle's time): the event stream sends a "replication" event when it
// changes. "" when the host runs no replication.
func (c *Console) replicationDigest() string {
	r := c.repl.Load()
	if r == nil {
		return ""
	}
	type groupKey struct {
		Name, State, Error string
		Paused             bool
		Point, Cycle       uint64
	}
	type replicaKey struct {
		Group, State, Staging string
		Points                []uint64
		Tests                 []string
		Writes                bool
	}
	var keys []any
	for _, g := range (*r).Groups() {
		k := groupKey{Name: g.Name, State: g.State, Error: g.Error, Paused: g.Paused}
		if g.LastPoint != nil {
			k.Point = g.LastPoint.Seq
		}
		if g.LastCycle != nil {
			k.Cycle = g.LastCycle.Seq
		}
		keys = append(keys, k)
	}
	reps, _ := (*r).Replicas()
	for _, rp := range reps {
		k := replicaKey{Group: rp.Group, State: rp.State, Writes: rp.WritesSincePoint}
		for _, p := range rp.Points {
			k.Points = append(k.Points, p.Seq)
		}
		for d, exp := range rp.Tests {
			k.Tests = append(k.Tests, d+"="+exp)
		}
		slices.Sort(k.Tests)
		if rp.Staging != nil {
			k.Staging = rp.Staging.Cycle
		}
		keys = append(keys, k)
	}
	b, _ := json.Marshal(keys)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

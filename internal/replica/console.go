package replica

import (
	"sort"

	wire "github.com/blockwise/blockwise/api"
)

// Groups returns the source groups by name, as GET /v1/replications
// answers them (and the console's replication page shows them).
func (s *Service) Groups() []wire.Replication {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]wire.Replication, 0, len(s.groups))
	for _, g := range s.groups {
		g.mu.Lock()
		out = append(out, g.view())
		g.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Replicas returns the groups this host keeps replicas of, as GET
// /v1/replicas answers them.
func (s *Service) Replicas() ([]wire.Replica, error) {
	names, err := s.target.store.names()
	if err != nil {
		return nil, err
	}
	out := []wire.Replica{}
	for _, n := range names {
		if st, err := s.target.get(n); err == nil {
			out = append(out, st.Replica)
		}
	}
	return out, nil
}

package api

import (
	"net/http"

	wire "github.com/blockwise/blockwise/api"
)

func (s *Server) hostInfo(r *http.Request) (int, any, error) {
	ds := s.h.Datastore()
	out := wire.HostInfo{DatastoreID: ds.ID(), DatastorePath: ds.Dir(), Offload: wireOffload(s.h.Offloads())}
	sp, err := s.h.Space()
	if err != nil {
		return 0, nil, err
	}
	out.Space = wireSpace(sp)
	return http.StatusOK, out, nil
}

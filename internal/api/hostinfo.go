package api

import (
	"net/http"

	wire "github.com/blockwise/blockwise/api"
)

func (s *Server) hostInfo(r *http.Request) (int, any, error) {
	ds := s.h.Datastore()
	return http.StatusOK, wire.HostInfo{DatastoreID: ds.ID(), DatastorePath: ds.Dir(), Offload: s.offload()}, nil
}

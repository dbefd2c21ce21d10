package api

import (
	"fmt"
	"net/http"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/host"
)

// Disk leases (host/lease.go): one backup of a disk at a time, whatever
// repository it writes to.

func lease(l host.Lease) wire.Lease {
	return wire.Lease{ID: l.ID, Disk: l.Disk, Holder: l.Holder, Acquired: l.Acquired.UTC(), Expires: l.Expires.UTC()}
}

func leaseRequest(r *http.Request, needHolder bool) (wire.LeaseRequest, time.Duration, error) {
	var req wire.LeaseRequest
	if err := decode(r, &req); err != nil {
		return req, 0, err
	}
	ttl := time.Duration(req.TTLMillis) * time.Millisecond
	switch {
	case needHolder && (req.Holder == "" || len(req.Holder) > 256):
		return req, 0, badRequest("holder: 1 to 256 bytes saying who holds the lease")
	case ttl < host.MinLeaseTTL || ttl > host.MaxLeaseTTL:
		return req, 0, badRequest(fmt.Sprintf("ttlMillis %d: want %d to %d", req.TTLMillis, host.MinLeaseTTL.Milliseconds(), host.MaxLeaseTTL.Milliseconds()))
	}
	return req, ttl, nil
}

func (s *Server) getLease(r *http.Request) (int, any, error) {
	l, err := s.h.CurrentLease(r.PathValue("disk"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, lease(l), nil
}

func (s *Server) acquireLease(r *http.Request) (int, any, error) {
	req, ttl, err := leaseRequest(r, true)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.h.AcquireLease(r.PathValue("disk"), req.Holder, ttl, req.Replace)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("disk leased", "disk", l.Disk, "lease", l.ID, "holder", l.Holder, "replaced", req.Replace)
	return http.StatusCreated, lease(l), nil
}

func (s *Server) renewLease(r *http.Request) (int, any, error) {
	_, ttl, err := leaseRequest(r, false)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.h.RenewLease(r.PathValue("disk"), r.PathValue("id"), ttl)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, lease(l), nil
}

func (s *Server) releaseLease(r *http.Request) (int, any, error) {
	if err := s.h.ReleaseLease(r.PathValue("disk"), r.PathValue("id")); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// ExportExists reports whether export ("DISK" or "DISK@SNAPSHOT") exists
// on h: the check a ticket passes at every new connection.
func ExportExists(h *host.Host, export string) error {
	dn, sn := host.SplitExport(export)
	d, err := h.Disk(dn)
	if err != nil {
		return err
	}
	if !strings.Contains(export, "@") {
		return nil
	}
	for _, si := range d.Snapshots() {
		if si.ID == sn {
			return nil
		}
	}
	return fmt.Errorf("disk %s: snapshot %s: %w", dn, sn, disk.ErrNotFound)
}

func (s *Server) diskTicket(r *http.Request) (int, any, error) {
	_, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	return s.createTicket(r, name)
}

func (s *Server) snapshotTicket(r *http.Request) (int, any, error) {
	_, si, err := s.findSnapshot(r)
	if err != nil {
		return 0, nil, err
	}
	return s.createTicket(r, r.PathValue("disk")+"@"+si.ID)
}

// createTicket issues a ticket bound to the request's API token (none
// over the unix socket); the body is optional.
func (s *Server) createTicket(r *http.Request, export string) (int, any, error) {
	if s.tickets == nil {
		return 0, nil, problem(http.StatusNotImplemented, wire.ProblemInvalidRequest, "this host issues no NBD tickets")
	}
	var req wire.CreateTicketRequest
	if err := decodeOptional(r, &req); err != nil {
		return 0, nil, err
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(MaxTicketTTL/time.Second) {
		return 0, nil, badRequest(fmt.Sprintf("ttlSeconds %d: want 1 to %d", req.TTLSeconds, int64(MaxTicketTTL/time.Second)))
	}
	tokenID, _ := r.Context().Value(tokenKey{}).(string)
	t, err := s.tickets.Create(export, tokenID, time.Duration(req.TTLSeconds)*time.Second)
	if errors.Is(err, ErrTooManyTickets) {
		return 0, nil, problem(http.StatusTooManyRequests, wire.ProblemTooManyTickets, err.Error())
	}
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("nbd ticket created", "ticket", t.ID, "export", export, "token", tokenID, "expires", t.Expires)
	return http.StatusCreated, t, nil
}

// decodeOptional is decode for a body that may be empty.
func decodeOptional(r *http.Request, v any) error {
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	r.Body = io.NopCloser(br)
	return decode(r, v)
}

func (s *Server) listTickets(r *http.Request) (int, any, error) {
	if s.tickets == nil {
		return http.StatusOK, []wire.Ticket{}, nil
	}
	return http.StatusOK, s.tickets.List(), nil
}

func (s *Server) deleteTicket(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	if s.tickets == nil || s.tickets.Revoke(id) != nil {
		return 0, nil, problem(http.StatusNotFound, wire.ProblemTicketNotFound, "no live ticket "+id)
	}
	s.log.Info("nbd ticket revoked", "ticket", id)
	return http.StatusNoContent, nil, nil
}

// NewHostTickets wires a ticket store to host h: the datastore's CA
// (created on first need), h's exports, the URIs of exports and the
// token store (nil: tickets are not tied to tokens).
func NewHostTickets(h *host.Host, tokens *Tokens, exports ExportConfig) *Tickets {
	o := TicketOptions{
		CA:     LazyCA(h.Datastore().Dir()),
		Exists: func(export string) error { return ExportExists(h, export) },
		URIs:   exports.TLSURIs,
	}
	if tokens != nil {
		o.TokenAlive = tokens.Has
	}
	return NewTickets(o)
}

// LazyCA loads (or creates) the datastore's CA on the first call that
// succeeds, and returns it from then on.
func LazyCA(dsDir string) func() (*CA, error) {
	var mu sync.Mutex
	var ca *CA
	return func() (*CA, error) {
		mu.Lock()
		defer mu.Unlock()
		if ca != nil {
			return ca, nil
		}
		c, err := LoadCA(dsDir)
		if err != nil {
			return nil, err
		}
		ca = c
		return ca, nil
	}
}

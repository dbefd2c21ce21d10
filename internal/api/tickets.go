package api

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// Ticket errors.
var (
	// ErrTicketNotFound: no live ticket has that ID.
	ErrTicketNotFound = errors.New("ticket not found")
	// ErrTicketRefused: a connection's certificate names no live ticket,
	// or a ticket that does not cover the export asked for.
	ErrTicketRefused = errors.New("ticket refused")
	// ErrTooManyTickets: the store is full (MaxTickets live tickets).
	ErrTooManyTickets = errors.New("too many live tickets")
)

// Ticket lifetimes.
const (
	DefaultTicketTTL = 24 * time.Hour
	MaxTicketTTL     = 30 * 24 * time.Hour
	// DefaultMaxTickets bounds the store, so a token holder cannot grow
	// the host's memory without end.
	DefaultMaxTickets = 10000
)

// ticketCNPrefix starts the common name of a ticket's certificate; the
// rest is the ticket ID.
const ticketCNPrefix = "blockwise ticket "

// TicketOptions configure a Tickets store.
type TicketOptions struct {
	// CA signs the client certificates; it is called on first need (it
	// may create the datastore's CA).
	CA func() (*CA, error)
	// Exists reports whether an export ("DISK" or "DISK@SNAPSHOT") still
	// exists; a ticket of a gone export is refused.
	Exists func(export string) error
	// TokenAlive reports whether the API token with that ID is still
	// listed; a ticket created with a revoked token is refused. Nil: all.
	TokenAlive func(id string) bool
	// URIs lists the TLS URIs of an export, for the answer to Create.
	URIs func(export string) []string
	// Now is the clock (tests); nil is time.Now.
	Now        func() time.Time
	MaxTickets int
}

type ticket struct {
	view   wire.Ticket // without the PEM fields
	serial *big.Int
}

// Tickets are the NBD tickets of a host, in memory: a restart revokes
// them all. Each is checked again for every new connection, at the TLS
// handshake (VerifyConnection) and for each export the client names
// (Authorize); connections already transmitting are not cut.
type Tickets struct {
	o  TicketOptions
	mu sync.Mutex
	m  map[string]*ticket
}

// NewTickets returns an empty store.
func NewTickets(o TicketOptions) *Tickets {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTickets <= 0 {
		o.MaxTickets = DefaultMaxTickets
	}
	return &Tickets{o: o, m: map[string]*ticket{}}
}

// Create issues a ticket for export, valid for ttl (0: the default),
// bound to the API token tokenID ("" over the unix socket).
func (ts *Tickets) Create(export, tokenID string, ttl time.Duration) (wire.Ticket, error) {
	if ttl == 0 {
		ttl = DefaultTicketTTL
	}
	if ttl < time.Second || ttl > MaxTicketTTL {
		return wire.Ticket{}, fmt.Errorf("ticket lifetime %s: want 1s to %s", ttl, MaxTicketTTL)
	}
	ca, err := ts.o.CA()
	if err != nil {
		return wire.Ticket{}, err
	}
	var b [8]byte
	rand.Read(b[:])
	now := ts.o.Now().UTC()
	t := &ticket{serial: randSerial(), view: wire.Ticket{ID: hex.EncodeToString(b[:]), Export: export,
		Created: now.Truncate(time.Second), Expires: wholeSecondAfter(now.Add(ttl)), Token: tokenID}}
	certPEM, keyPEM, err := ca.issue(&x509.Certificate{
		SerialNumber: t.serial, Subject: pkix.Name{CommonName: ticketCNPrefix + t.view.ID},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, t.view.Expires)
	if err != nil {
		return wire.Ticket{}, err
	}
	if ts.o.URIs != nil {
		t.view.URIs = ts.o.URIs(export)
	}
	if err := ts.add(t); err != nil {
		return wire.Ticket{}, err
	}
	// Checked after add: a delete of the export that raced this create
	// either ran RevokeExport after add (taking the ticket with it) or
	// finished before this check. Otherwise a ticket for a disk deleted
	// meanwhile would open a new disk given the same name.
	if err := ts.o.Exists(export); err != nil {
		ts.Revoke(t.view.ID)
		return wire.Ticket{}, fmt.Errorf("ticket for %s: %w", export, err)
	}
	out := t.view
	out.CACert, out.ClientCert, out.ClientKey = string(ca.CertPEM()), string(certPEM), string(keyPEM)
	return out, nil
}

// wholeSecondAfter rounds t up to a whole second: a certificate's
// NotAfter holds whole seconds, and the ticket must live at least its ttl
// (ttl to ttl+1s). Expiry was the creation time truncated plus the ttl,
// so a 1s ticket created late in a second lived a few milliseconds, and
// its first TLS handshake could fail (TestTicketRealClients under load).
func wholeSecondAfter(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

func (ts *Tickets) add(t *ticket) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.pruneLocked()
	if len(ts.m) >= ts.o.MaxTickets {
		return fmt.Errorf("%w (%d)", ErrTooManyTickets, ts.o.MaxTickets)
	}
	ts.m[t.view.ID] = t
	return nil
}

// pruneLocked forgets expired tickets; mu held.
func (ts *Tickets) pruneLocked() {
	now := ts.o.Now()
	for id, t := range ts.m {
		if !now.Before(t.view.Expires) {
			delete(ts.m, id)
		}
	}
}

// List returns the live tickets, oldest first, without secrets.
func (ts *Tickets) List() []wire.Ticket {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.pruneLocked()
	out := make([]wire.Ticket, 0, len(ts.m))
	for _, t := range ts.m {
		out = append(out, t.view)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Created.Before(out[j].Created) || (out[i].Created.Equal(out[j].Created) && out[i].ID < out[j].ID)
	})
	return out
}

// Revoke deletes a ticket: new connections with it are refused.
func (ts *Tickets) Revoke(id string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.m[id]; !ok {
		return fmt.Errorf("%s: %w", id, ErrTicketNotFound)
	}
	delete(ts.m, id)
	return nil
}

// RevokeExport deletes the tickets of a deleted export: a disk's name
// takes its snapshots' tickets with it. A new disk or snapshot of the
// same name must not inherit them.
func (ts *Tickets) RevokeExport(diskName, snapshot string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for id, t := range ts.m {
		dn, sn, _ := strings.Cut(t.view.Export, "@")
		if dn == diskName && (snapshot == "" || sn == snapshot) {
			delete(ts.m, id)
		}
	}
}

// lookup finds the live ticket a verified client certificate stands for.
func (ts *Tickets) lookup(cert *x509.Certificate) (wire.Ticket, error) {
	id, ok := strings.CutPrefix(cert.Subject.CommonName, ticketCNPrefix)
	if !ok {
		return wire.Ticket{}, fmt.Errorf("%w: certificate %q is not a ticket", ErrTicketRefused, cert.Subject.CommonName)
	}
	ts.mu.Lock()
	t, ok := ts.m[id]
	ts.mu.Unlock()
	switch {
	case !ok:
		return wire.Ticket{}, fmt.Errorf("%w: ticket %s revoked or unknown", ErrTicketRefused, id)
	case t.serial.Cmp(cert.SerialNumber) != 0:
		return wire.Ticket{}, fmt.Errorf("%w: ticket %s: not its certificate", ErrTicketRefused, id)
	case !ts.o.Now().Before(t.view.Expires):
		return wire.Ticket{}, fmt.Errorf("%w: ticket %s expired at %s", ErrTicketRefused, id, t.view.Expires.Format(time.RFC3339))
	case t.view.Token != "" && ts.o.TokenAlive != nil && !ts.o.TokenAlive(t.view.Token):
		return wire.Ticket{}, fmt.Errorf("%w: ticket %s: API token %s revoked", ErrTicketRefused, id, t.view.Token)
	}
	if err := ts.o.Exists(t.view.Export); err != nil {
		return wire.Ticket{}, fmt.Errorf("%w: ticket %s: export %s gone: %v", ErrTicketRefused, id, t.view.Export, err)
	}
	return t.view, nil
}

// peerTicket is the ticket of a TLS peer whose chain crypto/tls verified.
func (ts *Tickets) peerTicket(cs *tls.ConnectionState) (wire.Ticket, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return wire.Ticket{}, fmt.Errorf("%w: no verified client certificate", ErrTicketRefused)
	}
	return ts.lookup(cs.PeerCertificates[0])
}

// VerifyConnection is the TLS hook: the handshake fails unless the
// client's certificate (already verified against the CA) is a live
// ticket.
func (ts *Tickets) VerifyConnection(cs tls.ConnectionState) error {
	_, err := ts.peerTicket(&cs)
	return err
}

// Authorize is the nbd.ServerOptions hook: the export must be the
// ticket's own, and the ticket still alive.
func (ts *Tickets) Authorize(_ context.Context, peer *tls.ConnectionState, export string) error {
	t, err := ts.peerTicket(peer)
	if err != nil {
		return err
	}
	if export != t.Export {
		return fmt.Errorf("%w: ticket %s is for %s, not %q", ErrTicketRefused, t.ID, t.Export, export)
	}
	return nil
}

// CA is the store's certificate authority (loaded or created now).
func (ts *Tickets) CA() (*CA, error) { return ts.o.CA() }

// ServerTLS is the TLS configuration of a ticket-only NBD listener:
// server certificate cert, client certificates from the CA required and
// checked against the store.
func (ts *Tickets) ServerTLS(cert tls.Certificate) (*tls.Config, error) {
	ca, err := ts.o.CA()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
		VerifyConnection: ts.VerifyConnection,
	}, nil
}

package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// ticketNBD serves the env's host over TCP as `blockwise serve --nbd-tcp`
// does: TLS required, client certificates from the host CA, tickets
// checked at the handshake and for each export. It returns host:port.
func ticketNBD(t *testing.T, e *apitest.Env) string {
	t.Helper()
	ca, err := api.LoadCA(e.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCert(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.Tickets.ServerTLS(cert)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(e.Host, nbd.ServerOptions{TLSConfig: cfg, RequireTLS: true, Authorize: e.Tickets.Authorize})
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

func dialTicket(addr, export string, tk *client.Ticket) (*nbd.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var tc *tls.Config
	if tk != nil {
		var err error
		if tc, err = client.TicketTLS(tk, nil); err != nil {
			return nil, err
		}
	}
	return nbd.Dial(ctx, "nbds://"+addr+"/"+url.PathEscape(export), &nbd.ClientOptions{TLSConfig: tc})
}

func mustDial(t *testing.T, addr, export string, tk *client.Ticket) *nbd.Client {
	t.Helper()
	c, err := dialTicket(addr, export, tk)
	if err != nil {
		t.Fatalf("dial %s with ticket: %v", export, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func refused(t *testing.T, addr, export string, tk *client.Ticket, why string) {
	t.Helper()
	if c, err := dialTicket(addr, export, tk); err == nil {
		c.Close()
		t.Fatalf("%s: %s opened", why, export)
	}
}

func createDisks(t *testing.T, e *apitest.Env, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := e.Client.CreateDisk(context.Background(), client.CreateDiskRequest{Name: n, Size: mib}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTicketOpensItsExportOnly: a ticket for disk a reads and writes a
// over TLS; it does not open b, and nothing opens without a ticket.
func TestTicketOpensItsExportOnly(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	createDisks(t, e, "a", "b")
	addr := ticketNBD(t, e)
	tk, err := e.Client.CreateTicket(ctx, "a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Export != "a" || tk.ClientKey == "" || tk.CACert == "" || len(tk.URIs) != 1 ||
		tk.URIs[0] != "nbds://127.0.0.1:10809/a" || tk.Expires.Sub(tk.Created) < api.DefaultTicketTTL || tk.Expires.Sub(tk.Created) > api.DefaultTicketTTL+time.Second {
		t.Fatalf("ticket %+v", tk)
	}
	c := mustDial(t, addr, "a", tk)
	if err := c.WriteAt(ctx, make([]byte, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	refused(t, addr, "b", tk, "ticket for a")
	refused(t, addr, "", tk, "ticket for a, default export")
	refused(t, addr, "a", nil, "no client certificate")
	if _, err := nbd.Dial(ctx, "nbd://"+addr+"/a", nil); !errors.Is(err, nbd.ErrTLSRequired) {
		t.Fatalf("plain NBD: %v", err)
	}
	// A certificate from another CA (another host's ticket) is refused.
	other := apitest.Start(t)
	createDisks(t, other, "a")
	foreign, err := other.Client.CreateTicket(ctx, "a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign.CACert = tk.CACert // trust this host, present the other's certificate
	refused(t, addr, "a", foreign, "certificate of another host's CA")
}

// TestTicketRevoked: DELETE /v1/tickets/{id} refuses new connections; a
// connection already open keeps working (as VMware's tickets).
func TestTicketRevoked(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	createDisks(t, e, "a")
	addr := ticketNBD(t, e)
	tk, err := e.Client.CreateTicket(ctx, "a", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, addr, "a", tk)
	list, err := e.Client.ListTickets(ctx)
	if err != nil || len(list) != 1 || list[0].ID != tk.ID || list[0].ClientKey != "" || list[0].ClientCert != "" {
		t.Fatalf("list %+v %v", list, err)
	}
	if err := e.Client.DeleteTicket(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	refused(t, addr, "a", tk, "revoked ticket")
	if err := c.ReadAt(ctx, make([]byte, 512), 0); err != nil {
		t.Fatalf("open connection after revoke: %v", err)
	}
	if err := e.Client.DeleteTicket(ctx, tk.ID); !errors.Is(err, client.ErrTicketNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if list, _ := e.Client.ListTickets(ctx); len(list) != 0 {
		t.Fatalf("list after revoke %+v", list)
	}
}

// TestTicketExportGone: a snapshot's ticket is refused once the snapshot
// is deleted, even when a snapshot of the same ID is made again; a
// disk's ticket dies with the disk.
func TestTicketExportGone(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	createDisks(t, e, "a", "b")
	addr := ticketNBD(t, e)
	if _, err := e.Client.CreateSnapshot(ctx, "a", "s1", ""); err != nil {
		t.Fatal(err)
	}
	tk, err := e.Client.CreateTicket(ctx, "a", "s1", 0)
	if err != nil || tk.Export != "a@s1" {
		t.Fatalf("%+v %v", tk, err)
	}
	mustDial(t, addr, "a@s1", tk).Close()
	refused(t, addr, "a", tk, "snapshot ticket on the live disk")
	// The client's Close does not wait for the server to release the
	// export: until it has, the snapshot has an open view (ErrBusy).
	task, err := e.Client.DeleteSnapshot(ctx, "a", "s1")
	for deadline := time.Now().Add(5 * time.Second); errors.Is(err, client.ErrBusy) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		task, err = e.Client.DeleteSnapshot(ctx, "a", "s1")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.WaitTask(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	refused(t, addr, "a@s1", tk, "ticket of a deleted snapshot")
	if _, err := e.Client.CreateSnapshot(ctx, "a", "s1", ""); err != nil {
		t.Fatal(err)
	}
	refused(t, addr, "a@s1", tk, "ticket of a deleted snapshot, ID reused")
	if _, err := e.Client.CreateTicket(ctx, "a", "nope", 0); !errors.Is(err, client.ErrSnapshotNotFound) {
		t.Fatalf("ticket for a missing snapshot: %v", err)
	}
	tb, err := e.Client.CreateTicket(ctx, "b", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Client.DeleteDisk(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	createDisks(t, e, "b")
	refused(t, addr, "b", tb, "ticket of a deleted disk, name reused")
}

// TestTicketExpires: a ticket is refused once its lifetime is over (the
// certificate's validity ends with it too).
func TestTicketExpires(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	createDisks(t, e, "a")
	addr := ticketNBD(t, e)
	tk, err := e.Client.CreateTicket(ctx, "a", "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mustDial(t, addr, "a", tk).Close()
	time.Sleep(time.Until(tk.Expires) + 100*time.Millisecond)
	refused(t, addr, "a", tk, "expired ticket")
	if list, _ := e.Client.ListTickets(ctx); len(list) != 0 {
		t.Fatalf("expired ticket listed: %+v", list)
	}
	for _, ttl := range []string{`{"ttlSeconds":-1}`, `{"ttlSeconds":99999999}`, `{"ttl":1}`, `[`} {
		if code := raw(t, e, "POST", "/v1/disks/a/tickets", ttl, nil); code != 400 {
			t.Errorf("POST %s: %d, want 400", ttl, code)
		}
	}
	if code := raw(t, e, "POST", "/v1/disks/a/tickets", "", nil); code != 201 {
		t.Errorf("POST without a body: %d, want 201", code)
	}
}

// TestTicketDiesWithToken: a ticket created over TCP with an API token
// is refused once that token is revoked (`blockwise token revoke`).
func TestTicketDiesWithToken(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	createDisks(t, e, "a")
	addr := ticketNBD(t, e)
	tokens := api.OpenTokens(e.Dir)
	tok, secret, err := tokens.Create("backup-proxy")
	if err != nil {
		t.Fatal(err)
	}
	// The API over loopback TCP (serve puts TLS around it; the token is
	// what this test is about).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	tc, err := client.New("http://"+l.Addr().String(), client.Options{Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tc.CreateTicket(ctx, "a", "", 0)
	if err != nil || tk.Token != tok.ID {
		t.Fatalf("ticket %+v %v", tk, err)
	}
	mustDial(t, addr, "a", tk).Close()
	if err := tokens.Revoke(tok.ID); err != nil {
		t.Fatal(err)
	}
	refused(t, addr, "a", tk, "ticket of a revoked token")
	// One made over the unix socket is tied to no token.
	tu, err := e.Client.CreateTicket(ctx, "a", "", 0)
	if err != nil || tu.Token != "" {
		t.Fatalf("%+v %v", tu, err)
	}
	mustDial(t, addr, "a", tu).Close()
}

// TestCAFiles: the CA lives in DATASTORE/pki (0700) with a 0600 key, and
// is the same after a reload.
func TestCAFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := api.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"pki": 0o700 | os.ModeDir, "pki/ca-key.pem": 0o600, "pki/ca-cert.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", name, fi.Mode(), err, mode)
		}
	}
	again, err := api.LoadCA(dir)
	if err != nil || string(again.CertPEM()) != string(ca.CertPEM()) {
		t.Fatalf("reloaded CA differs (%v)", err)
	}
	// A crash between the two files leaves a key without a certificate:
	// a new pair is made.
	os.Remove(filepath.Join(dir, "pki/ca-cert.pem"))
	fresh, err := api.LoadCA(dir)
	if err != nil || string(fresh.CertPEM()) == string(ca.CertPEM()) {
		t.Fatalf("half-written CA: %v", err)
	}
}

// TestTicketStore covers the store alone with a fake clock: expiry
// without TLS's own check, the bound, and certificates that are not
// tickets.
func TestTicketStore(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	gone := map[string]bool{}
	ts := api.NewTickets(api.TicketOptions{
		CA: api.LazyCA(dir), Now: func() time.Time { return now }, MaxTickets: 2,
		Exists: func(e string) error {
			if gone[e] {
				return disk.ErrNotFound
			}
			return nil
		},
	})
	t1, err := ts.Create("vm", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	state := func(tk string) *tls.ConnectionState {
		tc, err := client.TicketTLS(&client.Ticket{ID: "x", ClientCert: tk, ClientKey: t1.ClientKey, CACert: t1.CACert}, nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf := tc.Certificates[0].Leaf
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
	}
	cs := state(t1.ClientCert)
	if err := ts.Authorize(context.Background(), cs, "vm"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		peer   *tls.ConnectionState
		export string
		before func()
	}{
		{"other export", cs, "vm@s", nil},
		{"no TLS", nil, "vm", nil},
		{"unverified", &tls.ConnectionState{PeerCertificates: cs.PeerCertificates}, "vm", nil},
		{"export gone", cs, "vm", func() { gone["vm"] = true }},
		{"expired", cs, "vm", func() { gone["vm"] = false; now = t1.Expires }},
	} {
		if c.before != nil {
			c.before()
		}
		if err := ts.Authorize(context.Background(), c.peer, c.export); !errors.Is(err, api.ErrTicketRefused) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if l := ts.List(); len(l) != 0 {
		t.Fatalf("expired ticket listed %+v", l)
	}
	for i := 0; i < 2; i++ {
		if _, err := ts.Create("vm", "", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.Create("vm", "", time.Minute); !errors.Is(err, api.ErrTooManyTickets) {
		t.Fatalf("third ticket of 2: %v", err)
	}
	// A create that races the export's deletion leaves no ticket behind.
	ts.Revoke(ts.List()[0].ID)
	gone["vm"] = true
	if _, err := ts.Create("vm", "", time.Minute); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("ticket for a deleted export: %v", err)
	}
	if l := ts.List(); len(l) != 1 {
		t.Fatalf("ticket for a deleted export stored: %+v", l)
	}
	if !strings.Contains(t1.ClientCert, "BEGIN CERTIFICATE") || !strings.Contains(t1.ClientKey, "PRIVATE KEY") {
		t.Fatal("PEM fields")
	}
}

// TestTicketLivesItsTTL: a ticket and its certificate live at least the
// ttl asked for, and less than a second more, wherever in a second it is
// created (certificates hold whole seconds). Expiry was once the
// truncated creation time plus the ttl: a 1s ticket made at x.999 lived
// 1 ms and its first handshake failed.
func TestTicketLivesItsTTL(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		frac time.Duration // into the second at creation
		ttl  time.Duration
	}{{0, time.Second}, {time.Millisecond, time.Second}, {500 * time.Millisecond, 2 * time.Second}, {999 * time.Millisecond, time.Second}} {
		now := base.Add(c.frac)
		ts := api.NewTickets(api.TicketOptions{CA: api.LazyCA(dir), Now: func() time.Time { return now },
			Exists: func(string) error { return nil }})
		tk, err := ts.Create("vm", "", c.ttl)
		if err != nil {
			t.Fatal(err)
		}
		end := base.Add(c.frac + c.ttl)
		if tk.Expires.Before(end) || !tk.Expires.Before(end.Add(time.Second)) {
			t.Errorf("%v into a second, ttl %v: expires %v, want [%v, +1s)", c.frac, c.ttl, tk.Expires, end)
		}
		block, _ := pem.Decode([]byte(tk.ClientCert))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.NotAfter.Before(end) {
			t.Errorf("%v into a second, ttl %v: certificate ends %v, before %v", c.frac, c.ttl, cert.NotAfter, end)
		}
		now = end.Add(-time.Millisecond) // the ttl is not over yet
		leaf := []*x509.Certificate{cert}
		cs := &tls.ConnectionState{PeerCertificates: leaf, VerifiedChains: [][]*x509.Certificate{leaf}}
		if err := ts.Authorize(context.Background(), cs, "vm"); err != nil {
			t.Errorf("%v into a second, ttl %v: refused 1ms before its ttl is over: %v", c.frac, c.ttl, err)
		}
	}
}

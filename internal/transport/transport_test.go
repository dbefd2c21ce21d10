package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/testcert"
)

func newRepo(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), mem.New(), "", repo.Options{Unencrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSameManifestEveryMode: one disk backed up through each mode gives
// the same index pages, hence the same chunk references. nbdssl gets its
// ticket from the host and revokes it after; plain nbd needs a host that
// serves TCP without authentication (--nbd-tcp-insecure-no-auth).
func TestSameManifestEveryMode(t *testing.T) {
	th := startHostWith(t, true)
	const size = 8 << 20
	d := th.makeDisk(t, "vm", size)
	if _, err := d.CreateSnapshot("old", ""); err != nil { // a delta under the backup's snapshot
		t.Fatal(err)
	}
	writeRandom(t, d, size, 40)
	r := newRepo(t)
	var first []repo.ID
	for _, mode := range []string{ModeSAN, ModeHotAdd, ModeNBDSSL, ModeNBD} {
		var rep Report
		res, err := backup.Run(context.Background(), backup.Options{Disk: "vm", Host: backup.ClientHost{C: th.env.Client},
			Repo: r, Full: true, Open: Opener(mode, th.env, func(r Report) { rep = r })})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if rep.Mode != mode || len(rep.Skipped) != 0 {
			t.Fatalf("%s: report %s", mode, rep)
		}
		if res.ReadBytes == 0 {
			t.Fatalf("%s: nothing read", mode)
		}
		if first == nil {
			first = res.Manifest.Pages
		} else if !slices.Equal(first, res.Manifest.Pages) {
			t.Fatalf("%s: pages %v, san gave %v", mode, res.Manifest.Pages, first)
		}
	}
	if socks, _ := filepath.Glob(filepath.Join(th.Dir, "attach-*.sock")); len(socks) != 0 {
		t.Fatalf("hotadd left sockets behind: %v", socks)
	}
	if tks, err := th.env.Client.ListTickets(context.Background()); err != nil || len(tks) != 0 {
		t.Fatalf("nbdssl left tickets behind: %+v %v", tks, err)
	}
}

// TestTicketsOnlyHost: on a host whose TCP listeners need tickets (the
// default), nbdssl backs up and restores, over two paths, with tickets
// it gets and revokes itself; plain nbd is not offered.
func TestTicketsOnlyHost(t *testing.T) {
	th := startHost(t)
	ctx := context.Background()
	const size = 8 << 20
	d := th.makeDisk(t, "vm", size)
	r := newRepo(t)
	var rep Report
	res, err := backup.Run(ctx, backup.Options{Disk: "vm", Host: backup.ClientHost{C: th.env.Client},
		Repo: r, Full: true, Open: Opener(ModeNBDSSL, th.env, func(r Report) { rep = r })})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != ModeNBDSSL || !strings.Contains(rep.Detail, "2 paths") {
		t.Fatalf("report %s", rep)
	}
	if _, err := th.Host.Create("dst", size, diskOptions()); err != nil {
		t.Fatal(err)
	}
	tgt, rep, err := OpenTarget(ctx, ModeNBDSSL, th.env, "dst")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, backup.RestoreOptions{Repo: r, Manifest: res.Manifest.ID, Target: tgt}); err != nil {
		t.Fatal(err)
	}
	tgt.Close()
	want, got := make([]byte, size), make([]byte, size)
	dst, _ := th.Host.Disk("dst")
	d.ReadAt(want, 0)
	dst.ReadAt(got, 0)
	if !bytes.Equal(want, got) {
		t.Fatal("restored disk differs")
	}
	if tks, err := th.env.Client.ListTickets(ctx); err != nil || len(tks) != 0 {
		t.Fatalf("tickets left behind: %+v %v", tks, err)
	}
	si, err := d.CreateSnapshot("s", "")
	if err != nil {
		t.Fatal(err)
	}
	_, rep, err = Open(ctx, ModeNBD, th.env, "vm", si.ID)
	if !errors.Is(err, ErrNoMode) || !strings.Contains(rep.String(), "no nbd URI") {
		t.Fatalf("plain nbd on a tickets-only host: %s %v", rep, err)
	}
}

// TestSANForeignDatastoreFallsThrough: san refuses another datastore
// with a clear message; hotadd's precondition fails; nbd is used.
func TestSANForeignDatastoreFallsThrough(t *testing.T) {
	th := startHost(t)
	d := th.makeDisk(t, "vm", 1<<20)
	si, err := d.CreateSnapshot("s", "")
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := disk.OpenDatastore(other); err != nil {
		t.Fatal(err)
	}
	env := th.env
	env.Datastore = other
	_, _, err = Open(context.Background(), "san", env, "vm", si.ID)
	if !errors.Is(err, ErrNoMode) || !strings.Contains(err.Error(), "not the host's") {
		t.Fatalf("san on a foreign datastore: %v", err)
	}
	env.HostURL = "https://elsewhere:8443"
	src, rep, err := Open(context.Background(), DefaultOrder, env, "vm", si.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if rep.Mode != ModeNBDSSL || len(rep.Skipped) != 2 || rep.Skipped[0].Mode != ModeSAN || rep.Skipped[1].Mode != ModeHotAdd {
		t.Fatalf("report: %s", rep)
	}
	if !strings.Contains(rep.Skipped[0].Reason, "not the host's") || !strings.Contains(rep.Skipped[1].Reason, "unix socket") {
		t.Fatalf("reasons: %s", rep)
	}
	_, rep, err = Open(context.Background(), "san:hotadd:nbd", env, "vm", si.ID)
	if !errors.Is(err, ErrNoMode) || len(rep.Skipped) != 3 || !strings.Contains(rep.Skipped[2].Reason, "no nbd URI") {
		t.Fatalf("plain nbd from a tickets-only host: %s %v", rep, err)
	}
}

// TestNBDSSLWrongCAFailsClosed: a host certificate the CA does not vouch
// for stops the selection; it never falls through to plain nbd.
func TestNBDSSLWrongCAFailsClosed(t *testing.T) {
	th := startHost(t)
	d := th.makeDisk(t, "vm", 1<<20)
	si, err := d.CreateSnapshot("s", "")
	if err != nil {
		t.Fatal(err)
	}
	otherCA := testcert.New(t).Pool
	env := th.env
	env.TLS = &tls.Config{RootCAs: otherCA, MinVersion: tls.VersionTLS13}
	src, rep, err := Open(context.Background(), "nbdssl:nbd", env, "vm", si.ID)
	if src != nil || !errors.Is(err, ErrTLSVerify) || rep.Mode != "" {
		t.Fatalf("wrong CA: src %v, report %s, err %v", src, rep, err)
	}
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("not an unknown-authority error: %v", err)
	}
}

// TestUnknownMode names the culprit.
func TestUnknownMode(t *testing.T) {
	if _, err := ParseOrder("san:floppy"); !errors.Is(err, ErrUnknownMode) {
		t.Fatal(err)
	}
}

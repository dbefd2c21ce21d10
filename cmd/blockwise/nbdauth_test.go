package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
)

// freePort returns a loopback TCP address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startTicketServe runs serve with NBD on a loopback TCP port (tickets
// only, the default) and returns it with host:port.
func startTicketServe(t *testing.T, extra ...string) (*serveProc, string) {
	t.Helper()
	addr := freePort(t)
	d := startServe(t, append([]string{"--nbd-tcp", addr}, extra...)...)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return d, addr
		}
		if i == 100 {
			t.Fatalf("NBD TCP listener did not start:\n%s", d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// asUser runs a command as uid/gid (the tests run as root).
func asUser(uid, gid uint32, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Env = append(os.Environ(), "HOME=/", "XDG_CACHE_HOME=/nonexistent", "BLOCKWISE_HOST=", "BLOCKWISE_TOKEN=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const nobody = 65534

// publicBinary is a copy of the binary that nobody may run (the built
// one is in a 0700 directory).
func publicBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bwpub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blockwise")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	return p
}

// TestNBDRefusesOtherUsers: with the datastore directory open to all
// (0755), user nobody still cannot use the NBD socket (0600), the API
// socket (0600), plain NBD over TCP, or TLS without a ticket, with the
// real qemu-io, qemu-img and nbdinfo.
func TestNBDRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as nobody")
	}
	needTools(t, "qemu-io", "qemu-img", "nbdinfo")
	d, addr := startTicketServe(t)
	d.must(t, "disk", "create", "vm", "--size", "64M")
	if err := os.Chmod(d.dir, 0o755); err != nil { // only the sockets' own modes protect them now
		t.Fatal(err)
	}
	for _, name := range []string{"nbd.sock", "api.sock"} {
		fi, err := os.Stat(filepath.Join(d.dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want 0600", name, fi.Mode(), err)
		}
	}
	sock := filepath.Join(d.dir, "nbd.sock")
	// The CA certificate alone (public), readable by nobody: TLS without a ticket.
	caDir := filepath.Join(t.TempDir(), "ca")
	os.Mkdir(caDir, 0o755)
	os.Chmod(filepath.Dir(caDir), 0o755)
	ca, err := os.ReadFile(filepath.Join(d.dir, "pki", "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(caDir, "ca-cert.pem"), ca, 0o644)
	host, port, _ := strings.Cut(addr, ":")
	attempts := []struct {
		name string
		bin  string
		args []string
		want string // in the output: why it failed
	}{
		{"qemu-io on nbd.sock", "qemu-io", []string{"-f", "raw", "-c", "write -P 0x77 0 4k", "nbd+unix:///vm?socket=" + sock}, "ermission denied"},
		{"qemu-io plain TCP", "qemu-io", []string{"-f", "raw", "-c", "write -P 0x77 0 4k", "nbd://" + addr + "/vm"}, ""},
		{"qemu-img TLS without a ticket", "qemu-img", []string{"info", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + caDir,
			"--image-opts", fmt.Sprintf("driver=nbd,host=%s,port=%s,export=vm,tls-creds=tls0", host, port)}, ""},
		{"nbdinfo TLS without a ticket", "nbdinfo", []string{"nbds://" + addr + "/vm?tls-certificates=" + caDir}, ""},
		{"the API socket", publicBinary(t), []string{"--datastore", d.dir, "disk", "list"}, "ermission denied"},
	}
	for _, a := range attempts {
		out, err := asUser(nobody, nobody, a.bin, a.args...)
		if err == nil {
			t.Errorf("%s as nobody succeeded:\n%s", a.name, out)
		} else if !strings.Contains(out, a.want) {
			t.Errorf("%s as nobody: %v, want %q in:\n%s", a.name, err, a.want, out)
		}
	}
	// The owner (root) still uses the unix socket without a ticket.
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 4k", "nbd+unix:///vm?socket="+sock).CombinedOutput(); err != nil {
		t.Fatalf("owner on nbd.sock: %v\n%s", err, out)
	}
}

// ticketDir creates a ticket with the CLI and returns its directory.
func ticketDir(t *testing.T, d *serveProc, export string, extra ...string) (dir, id string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "tk")
	out := d.must(t, append([]string{"ticket", "create", export, "--dir", dir}, extra...)...)
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "ticket" || !strings.Contains(out, "nbds://") {
		t.Fatalf("ticket create: %s", out)
	}
	for name, mode := range map[string]os.FileMode{"ca-cert.pem": 0o600, "client-cert.pem": 0o600, "client-key.pem": 0o600} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v", name, fi.Mode(), err)
		}
	}
	return dir, f[1]
}

// ticketExpires is when ticket id expires, from `ticket list --json`.
func ticketExpires(t *testing.T, d *serveProc, id string) time.Time {
	t.Helper()
	var list []struct {
		ID      string
		Expires time.Time
	}
	if err := json.Unmarshal([]byte(d.must(t, "ticket", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, tk := range list {
		if tk.ID == id {
			return tk.Expires
		}
	}
	t.Fatalf("ticket %s not listed", id)
	return time.Time{}
}

// TestTicketRealClients: qemu-img, qemu-io, nbdcopy and nbdinfo open an
// export over TCP+TLS with a ticket from `blockwise ticket create`; the
// ticket opens nothing else and stops working when revoked, when its
// snapshot is deleted and when it expires.
func TestTicketRealClients(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "nbdinfo", "nbdcopy")
	d, addr := startTicketServe(t)
	d.must(t, "disk", "create", "vm", "--size", "64M")
	d.must(t, "disk", "create", "other", "--size", "64M")
	dir, id := ticketDir(t, d, "vm")
	host, port, _ := strings.Cut(addr, ":")
	obj := "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir
	opts := func(export string) string {
		return fmt.Sprintf("driver=nbd,host=%s,port=%s,export=%s,tls-creds=tls0", host, port, export)
	}
	run := func(bin string, args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	mustRun := func(bin string, args ...string) string {
		t.Helper()
		out, err := run(bin, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := mustRun("qemu-img", "info", "--object", obj, "--image-opts", opts("vm")); !strings.Contains(out, "64 MiB") {
		t.Fatalf("qemu-img info: %s", out)
	}
	mustRun("qemu-io", "--object", obj, "--image-opts", opts("vm"), "-c", "write -P 0x5a 1M 64k")
	if out := mustRun("qemu-io", "--object", obj, "--image-opts", opts("vm"), "-c", "read -P 0x5a 1M 64k"); !strings.Contains(out, "read 65536/65536") {
		t.Fatalf("qemu-io read: %s", out)
	}
	uri := "nbds://" + addr + "/vm?tls-certificates=" + dir
	if out := mustRun("nbdinfo", "--size", uri); strings.TrimSpace(out) != strconv.Itoa(64<<20) {
		t.Fatalf("nbdinfo --size: %s", out)
	}
	if out := mustRun("nbdinfo", "--list", "nbds://"+addr+"/?tls-certificates="+dir); !strings.Contains(out, "export=\"vm\"") || strings.Contains(out, "other") {
		t.Fatalf("nbdinfo --list shows more than the ticket's export:\n%s", out)
	}
	img := filepath.Join(t.TempDir(), "vm.raw")
	mustRun("nbdcopy", uri, img)
	data, err := os.ReadFile(img)
	if err != nil || len(data) != 64<<20 || !bytes.Equal(data[1<<20:1<<20+64<<10], bytes.Repeat([]byte{0x5a}, 64<<10)) {
		t.Fatalf("nbdcopy: %d bytes, %v", len(data), err)
	}
	// The ticket for vm opens nothing else.
	if out, err := run("qemu-img", "info", "--object", obj, "--image-opts", opts("other")); err == nil {
		t.Fatalf("ticket for vm opened other:\n%s", out)
	}
	if out, err := run("nbdinfo", "nbds://"+addr+"/other?tls-certificates="+dir); err == nil {
		t.Fatalf("nbdinfo: ticket for vm opened other:\n%s", out)
	}
	// Revoked: refused for new connections.
	if out := d.must(t, "ticket", "list"); !strings.Contains(out, id) {
		t.Fatalf("ticket list: %s", out)
	}
	d.must(t, "ticket", "rm", id)
	if out, err := run("qemu-img", "info", "--object", obj, "--image-opts", opts("vm")); err == nil {
		t.Fatalf("revoked ticket still opens vm:\n%s", out)
	}
	if out, code := d.run(t, "ticket", "rm", id); code != exitNotFound {
		t.Fatalf("ticket rm of a revoked ticket: exit %d: %s", code, out)
	}
	// A snapshot's ticket dies with the snapshot.
	d.must(t, "snapshot", "create", "vm", "s1")
	sdir, _ := ticketDir(t, d, "vm@s1")
	snapURI := "nbds://" + addr + "/vm@s1?tls-certificates=" + sdir
	mustRun("nbdinfo", "--size", snapURI)
	d.must(t, "snapshot", "rm", "vm", "s1")
	if out, err := run("nbdinfo", "--size", snapURI); err == nil {
		t.Fatalf("ticket of a deleted snapshot still opens it:\n%s", out)
	}
	// An expired ticket is refused. It lives 2s to 3s (whole seconds, at
	// least its ttl): 2s leaves a loaded machine time to start nbdinfo.
	edir, eid := ticketDir(t, d, "vm", "--ttl", "2s")
	expURI := "nbds://" + addr + "/vm?tls-certificates=" + edir
	mustRun("nbdinfo", "--size", expURI)
	time.Sleep(time.Until(ticketExpires(t, d, eid)) + 100*time.Millisecond)
	if out, err := run("nbdinfo", "--size", expURI); err == nil {
		t.Fatalf("expired ticket still opens vm:\n%s", out)
	}
}

// TestBackupNBDSSLTicketsOnly: `blockwise backup --transport nbdssl` and
// `restore --transport nbdssl` need no flags against a host that serves
// TCP with tickets only; they leave no ticket behind. `paths` works too.
func TestBackupNBDSSLTicketsOnly(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	d, addr := startTicketServe(t, "--nbd-tcp", freePort(t))
	e := &e2e{d: d, repo: filepath.Join(t.TempDir(), "repo")}
	e.cli = cli{dir: d.dir, combined: true}
	e.env = []string{"BLOCKWISE_REPO=" + e.repo, "BLOCKWISE_PASSWORD=correct horse", "BLOCKWISE_PASSWORD_FILE="}
	be, err := local.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "correct horse", repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	e.must(t, "disk", "create", "vm", "--size", "32M")
	e.apply(t, "vm", []write{{cmd: "write -q -P 0x33 1M 256k", off: 1 << 20, n: 256 << 10}, {cmd: "write -q -P 0x44 20M 64k", off: 20 << 20, n: 64 << 10}})
	var s backupSummary
	e.jsonOut(t, &s, "backup", "vm", "--transport", "nbdssl")
	if !strings.HasPrefix(s.Transport, "transport nbdssl (2 paths") {
		t.Fatalf("backup used %q", s.Transport)
	}
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	e.must(t, "restore", s.ID, "--to-disk", "back", "--transport", "nbdssl")
	got := filepath.Join(t.TempDir(), "got.raw")
	e.reference(t, "back", got)
	if err := sameFile(got, ref); err != nil {
		t.Fatalf("restored through nbdssl: %v", err)
	}
	if out := e.must(t, "paths", "vm"); strings.Count(out, "nbds://") != 2 || !strings.Contains(out, addr) {
		t.Fatalf("paths: %s", out)
	}
	if out := e.must(t, "ticket", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("tickets left behind: %s", out)
	}
}

// TestInsecureTCPNeedsTheFlag: plain NBD over TCP only with
// --nbd-tcp-insecure-no-auth, which warns; the flag alone is a usage
// error; the export URIs say nbd:// only then.
func TestInsecureTCPNeedsTheFlag(t *testing.T) {
	needTools(t, "nbdinfo")
	d, addr := startTicketServe(t)
	d.must(t, "disk", "create", "vm", "--size", "1M")
	if out := d.must(t, "export", "vm", "--all"); strings.Contains(out, "nbd://") || !strings.Contains(out, "nbds://"+addr+"/vm") {
		t.Fatalf("URIs of a tickets-only host: %s", out)
	}
	if out, err := exec.Command("nbdinfo", "--size", "nbd://"+addr+"/vm").CombinedOutput(); err == nil {
		t.Fatalf("plain NBD on a tickets-only host: %s", out)
	}
	if out, code := d.run(t, "serve", "--nbd-tcp-insecure-no-auth"); code != exitUsage {
		t.Fatalf("insecure flag without --nbd-tcp: exit %d: %s", code, out)
	}
	iaddr := freePort(t)
	di := startServe(t, "--nbd-tcp", iaddr, "--nbd-tcp-insecure-no-auth")
	di.must(t, "disk", "create", "vm", "--size", "1M")
	if out, err := exec.Command("nbdinfo", "--size", "nbd://"+iaddr+"/vm").CombinedOutput(); err != nil {
		t.Fatalf("insecure TCP: %v %s", err, out)
	}
	if out := di.must(t, "export", "vm", "--all"); !strings.Contains(out, "nbd://"+iaddr+"/vm") {
		t.Fatalf("URIs of an insecure host: %s", out)
	}
	di.cmd.Process.Signal(syscall.SIGTERM) // stderr is read once the process is done with it
	di.cmd.Wait()
	if !strings.Contains(di.stderr.String(), "WITHOUT AUTHENTICATION") {
		t.Fatalf("no warning in the log:\n%s", di.stderr.String())
	}
}

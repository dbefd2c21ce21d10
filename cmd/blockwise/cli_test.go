package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
)

var binary string

// TestMain builds the binary once; the tests run it as operators do. Their
// cache directory is their own, not the user's.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bwbin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "blockwise")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	// After the build: Go's build cache lives under XDG_CACHE_HOME too.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type daemon struct {
	dir    string
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

// startServe runs `blockwise serve` on a fresh datastore and waits for its API.
func startServe(t *testing.T, extra ...string) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "bwcli") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startServeIn(t, dir, extra...)
}

// startServeIn runs `blockwise serve` on the datastore dir (again, after
// a stop) and waits for its API.
func startServeIn(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{dir: dir}
	d.cmd = exec.Command(binary, append([]string{"serve", "--datastore", dir}, extra...)...)
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", filepath.Join(dir, "api.sock")); err == nil {
			c.Close()
			return d
		}
		if i == 100 {
			t.Fatalf("serve did not start:\n%s", d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run executes the CLI against the daemon; it returns stdout and the exit code.
func (d *daemon) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--datastore", d.dir}, args...)...)
	cmd.Env = append(os.Environ(), "BLOCKWISE_HOST=", "BLOCKWISE_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String() + errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func (d *daemon) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := d.run(t, args...)
	if code != 0 {
		t.Fatalf("blockwise %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

func (d *daemon) jsonOut(t *testing.T, v any, args ...string) {
	t.Helper()
	out := d.must(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("blockwise %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func TestCLI(t *testing.T) {
	d := startServe(t)
	ctx := context.Background()
	if fi, err := os.Stat(filepath.Join(d.dir, "api.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api.sock: %v %v", fi.Mode(), err)
	}
	var disk client.Disk
	d.jsonOut(t, &disk, "disk", "create", "vm1", "--size", "64M", "--granularity", "64K")
	if disk.Size != 64<<20 || disk.CBT == nil || disk.CBT.Granularity != 64<<10 {
		t.Fatalf("created %+v", disk)
	}
	if out := d.must(t, "disk", "list"); !strings.Contains(out, "vm1") || !strings.Contains(out, "64.0MiB") {
		t.Fatalf("list: %s", out)
	}
	var s1 client.Snapshot
	d.jsonOut(t, &s1, "snapshot", "create", "vm1", "s1", "-d", "base")
	uri := strings.TrimSpace(d.must(t, "export", "vm1"))
	writeNBD(t, ctx, uri, 3<<20)
	d.must(t, "snapshot", "create", "vm1", "s2")
	var ch client.ChangedAreas
	d.jsonOut(t, &ch, "changes", "vm1", "--snapshot", "s2", "--since", s1.ChangeID)
	if ch.Length != 64<<20 || len(ch.ChangedArea) != 1 || ch.ChangedArea[0].Start != 3<<20 {
		t.Fatalf("changes: %+v", ch)
	}
	if out := d.must(t, "changes", "vm1", "--snapshot", "s2"); !strings.Contains(out, "3145728") {
		t.Fatalf("changes table: %s", out)
	}
	if out := d.must(t, "export", "vm1@s2"); !strings.HasPrefix(out, "nbd+unix:///vm1@s2?socket=") {
		t.Fatalf("export: %s", out)
	}
	if out := d.must(t, "disk", "info", "vm1"); !strings.Contains(out, "s2") {
		t.Fatalf("info: %s", out)
	}
	var task client.Task
	d.jsonOut(t, &task, "snapshot", "rm", "vm1", "s1")
	if task.State != client.TaskDone {
		t.Fatalf("snapshot rm: %+v", task)
	}
	d.jsonOut(t, &disk, "disk", "grow", "vm1", "--size", "128M")
	if disk.Size != 128<<20 || len(disk.Snapshots) != 1 {
		t.Fatalf("grown: %+v", disk)
	}
	exitCodes(t, d, ctx)
	d.must(t, "disk", "rm", "vm1")
	sigterm(t, d)
}

func exitCodes(t *testing.T, d *daemon, ctx context.Context) {
	// An open NBD connection makes the disk busy.
	c, err := nbd.Dial(ctx, strings.TrimSpace(d.must(t, "export", "vm1@s2")), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"disk", "info", "nope"}, exitNotFound},
		{[]string{"snapshot", "rm", "vm1", "nope"}, exitNotFound},
		{[]string{"changes", "vm1", "--snapshot", "s2", "--since", "bogus"}, exitInvalid},
		{[]string{"disk", "rm", "vm1"}, exitBusy},
		{[]string{"snapshot", "rm", "vm1", "s2"}, exitBusy},
		{[]string{"disk", "create", "vm1", "--size", "1M"}, exitBusy},
		{[]string{"disk", "create", "x"}, exitUsage},
		{[]string{"disk", "create", "x", "--size", "ten"}, exitUsage},
		{[]string{"disk", "info"}, exitUsage},
		{[]string{"disk", "list", "--bogus"}, exitUsage},
		{[]string{"changes", "vm1"}, exitUsage},
		{[]string{"token", "revoke", "nope"}, exitNotFound},
	} {
		if out, code := d.run(t, tc.args...); code != tc.code {
			t.Errorf("blockwise %s: exit %d, want %d: %s", strings.Join(tc.args, " "), code, tc.code, out)
		}
	}
	c.Close()
}

func writeNBD(t *testing.T, ctx context.Context, uri string, off int64) {
	t.Helper()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), off, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func sigterm(t *testing.T, d *daemon) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

// TestCLIOverTLS: tokens from `blockwise token`, the API over TCP+TLS.
func TestCLIOverTLS(t *testing.T) {
	certDir := t.TempDir()
	cert, key := writeCert(t, certDir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := startServe(t, "--api-tcp", addr, "--api-tls-cert", cert, "--api-tls-key", key)
	secret := strings.TrimSpace(d.must(t, "token", "create", "ci"))
	if out := d.must(t, "token", "list"); !strings.Contains(out, "ci") || strings.Contains(out, secret) {
		t.Fatalf("token list: %s", out)
	}
	remote := []string{"--host", "https://" + addr, "--ca", cert}
	if out, code := d.run(t, append(remote, "disk", "list")...); code != exitUnauthorized {
		t.Fatalf("no token: exit %d: %s", code, out)
	}
	if out, code := d.run(t, append(remote, "--token", "bw_wrong", "disk", "create", "x", "--size", "1M")...); code != exitUnauthorized {
		t.Fatalf("wrong token: exit %d: %s", code, out)
	}
	d.must(t, append(remote, "--token", secret, "disk", "create", "vm1", "--size", "1M")...)
	if out := d.must(t, "disk", "list"); !strings.Contains(out, "vm1") || strings.Contains(out, "\nx ") {
		t.Fatalf("list: %s", out)
	}
	d.must(t, "token", "revoke", "ci")
	if _, code := d.run(t, append(remote, "--token", secret, "disk", "list")...); code != exitUnauthorized {
		t.Fatalf("revoked token: exit %d", code)
	}
	sigterm(t, d)
}

func writeCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Its own CA, as GnuTLS (qemu's tls-creds-x509) wants of a trust anchor.
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, keyPath
}

// TestPackSubset: n/t groups split the packs between them, x% takes
// about x% of them, and bad specs are usage errors.
func TestPackSubset(t *testing.T) {
	ids := make([]repo.ID, 3000)
	for i := range ids {
		ids[i] = repo.ID(sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
	}
	const groups = 7
	hits := make([]int, len(ids))
	for n := 1; n <= groups; n++ {
		sel, err := packSubset(fmt.Sprintf("%d/%d", n, groups))
		if err != nil {
			t.Fatal(err)
		}
		picked := 0
		for i, id := range ids {
			if sel(id) {
				hits[i]++
				picked++
			}
		}
		if picked < len(ids)/groups/2 {
			t.Errorf("group %d/%d picked %d of %d", n, groups, picked, len(ids))
		}
	}
	for i, h := range hits {
		if h != 1 {
			t.Fatalf("pack %d is in %d of the %d groups, want 1", i, h, groups)
		}
	}
	sel, err := packSubset("10%")
	if err != nil {
		t.Fatal(err)
	}
	picked := 0
	for _, id := range ids {
		if sel(id) {
			picked++
		}
	}
	if picked < 200 || picked > 400 { // 300 expected; 7 sigma either way
		t.Errorf("10%% picked %d of %d", picked, len(ids))
	}
	for _, bad := range []string{"", "0/3", "4/3", "1/0", "x/3", "0%", "101%", "-5%", "abc", "1/3/4"} {
		var ue *usageError
		if _, err := packSubset(bad); !errors.As(err, &ue) {
			t.Errorf("packSubset(%q): %v, want a usage error", bad, err)
		}
	}
}

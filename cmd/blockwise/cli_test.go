package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
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
	"github.com/blockwise/blockwise/internal/testcert"
)

type serveProc struct {
	cli
	cmd    *exec.Cmd
	stderr bytes.Buffer
}

// startServe runs `blockwise serve` on a fresh datastore and waits for its API.
func startServe(t *testing.T, extra ...string) *serveProc {
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
func startServeIn(t *testing.T, dir string, extra ...string) *serveProc {
	t.Helper()
	d := &serveProc{cli: cli{dir: dir}}
	d.cmd = cliCommand(dir, nil, append([]string{"serve"}, extra...)...)
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

func exitCodes(t *testing.T, d *serveProc, ctx context.Context) {
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

func sigterm(t *testing.T, d *serveProc) {
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
	pki := testcert.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := startServe(t, "--api-tcp", addr, "--api-tls-cert", pki.ServerCert, "--api-tls-key", pki.ServerKey)
	secret := strings.TrimSpace(d.must(t, "token", "create", "ci"))
	if out := d.must(t, "token", "list"); !strings.Contains(out, "ci") || strings.Contains(out, secret) {
		t.Fatalf("token list: %s", out)
	}
	remote := []string{"--host", "https://" + addr, "--ca", pki.CACert}
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

// A relative --datastore: the host's services (scheduler, recoveries)
// reach it through its API socket in the datastore, so the path must be
// made absolute; `serve --datastore ds` used to exit at once with
// ErrNoLocalAPI.
func TestServeRelativeDatastore(t *testing.T) {
	dir, err := os.MkdirTemp("", "bwrel")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := cliCommand("ds", nil, "serve")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sock := filepath.Join(dir, "ds", "api.sock")
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("serve --datastore ds did not start:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := cli{dir: filepath.Join(dir, "ds")}
	if out := d.must(t, "disk", "list"); strings.Contains(out, "error") {
		t.Fatalf("disk list: %s", out)
	}
}

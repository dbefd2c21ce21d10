package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/testcert"
)

// TestE2ERecoverHostTLS: recover --host https://… against a real serve
// on TLS (no --points-repo): the point comes from a policy's repository,
// whose password was sent once with policy create over the same TLS API
// and is kept by the host; the recover request carries none. Without a
// token the request is refused (401, exit unauthorized); an unknown
// policy is not found; with the token the recovery completes (--wait
// follows the job to the switch) and the new disk equals the point.
func TestE2ERecoverHostTLS(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	const size = 8 << 20
	r := e.recoveryRig(t, size, 47, "0")
	pki, addr := testcert.New(t), freeAddr(t)
	e.d.cmd.Process.Signal(syscall.SIGTERM)
	e.d.cmd.Wait()
	e.d = startServeIn(t, e.d.dir, "--api-tcp", addr, "--api-tls-cert", pki.ServerCert, "--api-tls-key", pki.ServerKey)
	secret := strings.TrimSpace(e.must(t, "token", "create", "ops"))
	remote := []string{"--host", "https://" + addr, "--ca", pki.CACert}
	tok := append(append([]string{}, remote...), "--token", secret)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.must(t, append(tok, "policy", "create", "p", "--disk", "vm", "--schedule", "@yearly", "--repo", e.repo, "--password-file", pw)...)
	for _, c := range []struct {
		args []string
		code int
	}{
		{append(remote, "recover", r.id, "--policy", "p", "--to-disk", "new"), exitUnauthorized},
		{append(remote, "--token", "bw_wrong", "recover", r.id, "--policy", "p", "--to-disk", "new"), exitUnauthorized},
		{append(tok, "recover", r.id, "--policy", "nope", "--to-disk", "new"), exitNotFound},
		{append(tok, "recover", r.id, "--to-disk", "new"), exitNotFound}, // no --points-repo, no policy
		{append(tok, "recover", "0123456789ab", "--policy", "p", "--to-disk", "new"), exitNotFound},
		{append(tok, "recover", r.id, "--policy", "p", "--to-disk", "new", "--overlay", t.TempDir()), exitUsage},
	} {
		if out, code := e.run(t, c.args...); code != c.code {
			t.Errorf("%v: exit %d, want %d: %s", c.args[len(remote):], code, c.code, out)
		}
	}
	out := e.must(t, append(tok, "recover", r.id, "--policy", "p", "--to-disk", "new", "--wait")...)
	if !strings.Contains(out, "switched to the new disk; job ") {
		t.Fatalf("recover --host https… --wait: %s", out)
	}
	var list []wire.Recovery
	if err := json.Unmarshal([]byte(e.must(t, append(tok, "--json", "recover", "--list")...)), &list); err != nil ||
		len(list) != 1 || list[0].Policy != "p" || list[0].Phase != "switched" || list[0].Job == "" {
		t.Fatalf("recoveries over TLS: %+v %v", list, err)
	}
	equalsModel(t, list[0].URI, r.model) // the export the VM uses serves the new disk
	e.must(t, append(tok, "job", "cancel", list[0].Job)...)
	if j := waitJob(t, e.d.dir, list[0].Job, wire.Job.Done); j.State != wire.JobSucceeded || j.Policy != "p" {
		t.Fatalf("the job canceled after the switch: %+v", j)
	}
	equalsModel(t, e.uri("new"), r.model)
}

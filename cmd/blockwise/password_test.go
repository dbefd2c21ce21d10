package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runRepoCLI runs the binary against the repository dir, with env added
// to a clean environment (no password, key file or repository from the
// caller's); it returns stdout+stderr and the exit code.
func runRepoCLI(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	base := []string{"BLOCKWISE_PASSWORD", "BLOCKWISE_PASSWORD_FILE", "BLOCKWISE_KEY_FILE", "BLOCKWISE_NEW_PASSWORD", "BLOCKWISE_REPO", "BLOCKWISE_CACHE_DIR"}
	cmd.Env = os.Environ()
	for _, k := range base {
		cmd.Env = slicesWithout(cmd.Env, k+"=")
	}
	cmd.Env = append(cmd.Env, "BLOCKWISE_REPO="+dir, "BLOCKWISE_CACHE_DIR="+filepath.Join(filepath.Dir(dir), "cache"))
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := exitOf(cmd.Run())
	return out.String(), code
}

// TestEmptyPasswordCLI: `repo init` and `repo key add` refuse an empty
// password (exit 2, saying how to mean it) and create nothing; with
// --insecure-no-password (--new-insecure-no-password) they work, and the
// repository then opens only with that flag, never beside a password.
func TestEmptyPasswordCLI(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	emptyFile := filepath.Join(dir, "empty.pw")
	os.WriteFile(emptyFile, []byte("\n"), 0o600)
	noPW := []string{"BLOCKWISE_PASSWORD="}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"empty BLOCKWISE_PASSWORD", noPW, nil},
		{"empty password file", nil, []string{"--password-file", emptyFile}},
	} {
		out, code := runRepoCLI(t, repoDir, tc.env, append([]string{"repo", "init"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(out, "empty password is not allowed") || !strings.Contains(out, "--insecure-no-password") {
			t.Fatalf("init, %s: exit %d: %s", tc.name, code, out)
		}
		if _, err := os.Stat(filepath.Join(repoDir, "config")); err == nil {
			t.Fatalf("init, %s: a refused init made a repository", tc.name)
		}
	}
	if out, code := runRepoCLI(t, repoDir, []string{"BLOCKWISE_PASSWORD=x"}, "repo", "init", "--insecure-no-password"); code != exitUsage {
		t.Fatalf("--insecure-no-password beside a password: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, repoDir, noPW, "repo", "init", "--insecure-no-password"); code != 0 || !strings.Contains(out, "empty password") {
		t.Fatalf("init --insecure-no-password: exit %d: %s", code, out)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		code int
	}{
		{noPW, []string{"snapshots"}, exitUsage},
		{nil, []string{"snapshots", "--password-file", emptyFile}, exitUsage},
		{noPW, []string{"snapshots", "--insecure-no-password"}, exitOK},
		{nil, []string{"snapshots", "--insecure-no-password"}, exitOK},
		{[]string{"BLOCKWISE_PASSWORD=x"}, []string{"snapshots", "--insecure-no-password"}, exitUsage},
		{[]string{"BLOCKWISE_PASSWORD=x"}, []string{"snapshots"}, exitUnauthorized},
	} {
		if out, code := runRepoCLI(t, repoDir, tc.env, tc.args...); code != tc.code {
			t.Errorf("%v %v: exit %d, want %d: %s", tc.env, tc.args, code, tc.code, out)
		}
	}

	// key add, on a repository with a password.
	pwRepo := filepath.Join(dir, "pwrepo")
	pw := []string{"BLOCKWISE_PASSWORD=correct horse"}
	if out, code := runRepoCLI(t, pwRepo, pw, "repo", "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{append([]string{"BLOCKWISE_NEW_PASSWORD="}, pw...), nil},
		{pw, []string{"--new-password-file", emptyFile}},
	} {
		args := append([]string{"repo", "key", "add"}, tc.args...)
		out, code := runRepoCLI(t, pwRepo, tc.env, args...)
		if code != exitUsage || !strings.Contains(out, "empty new password is not allowed") {
			t.Fatalf("key add %v: exit %d: %s", args, code, out)
		}
	}
	if out, code := runRepoCLI(t, pwRepo, noPW, "snapshots", "--insecure-no-password"); code != exitUnauthorized {
		t.Fatalf("a refused empty password opens: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, append([]string{"BLOCKWISE_NEW_PASSWORD=y"}, pw...), "repo", "key", "add", "--new-insecure-no-password"); code != exitUsage {
		t.Fatalf("--new-insecure-no-password beside a new password: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, pw, "repo", "key", "add", "--new-insecure-no-password"); code != 0 {
		t.Fatalf("key add --new-insecure-no-password: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, noPW, "snapshots", "--insecure-no-password"); code != 0 {
		t.Fatalf("the added empty password: exit %d: %s", code, out)
	}
}

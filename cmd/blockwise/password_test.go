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
		{noPW, []string{"points"}, exitUsage},
		{nil, []string{"points", "--password-file", emptyFile}, exitUsage},
		{noPW, []string{"points", "--insecure-no-password"}, exitOK},
		{nil, []string{"points", "--insecure-no-password"}, exitOK},
		{[]string{"BLOCKWISE_PASSWORD=x"}, []string{"points", "--insecure-no-password"}, exitUsage},
		{[]string{"BLOCKWISE_PASSWORD=x"}, []string{"points"}, exitUnauthorized},
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
	if out, code := runRepoCLI(t, pwRepo, noPW, "points", "--insecure-no-password"); code != exitUnauthorized {
		t.Fatalf("a refused empty password opens: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, append([]string{"BLOCKWISE_NEW_PASSWORD=y"}, pw...), "repo", "key", "add", "--new-insecure-no-password"); code != exitUsage {
		t.Fatalf("--new-insecure-no-password beside a new password: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, pw, "repo", "key", "add", "--new-insecure-no-password"); code != 0 {
		t.Fatalf("key add --new-insecure-no-password: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, pwRepo, noPW, "points", "--insecure-no-password"); code != 0 {
		t.Fatalf("the added empty password: exit %d: %s", code, out)
	}
}

// TestDamagedKeyFileCLI: a --key-file with one byte changed, cut short or
// emptied, and a damaged key slot in the repository's keys/, are "key
// file damaged" (exit 6) naming the file, not a wrong password (exit 7),
// which stays the answer for an intact key that does not open.
func TestDamagedKeyFileCLI(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	pw := []string{"BLOCKWISE_PASSWORD=correct horse"}
	if out, code := runRepoCLI(t, repoDir, pw, "repo", "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	kf := filepath.Join(dir, "backup.key")
	if out, code := runRepoCLI(t, repoDir, pw, "repo", "key", "add", "--new-key-file", kf); code != 0 {
		t.Fatalf("key add: exit %d: %s", code, out)
	}
	good, err := os.ReadFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	if out, code := runRepoCLI(t, repoDir, nil, "points", "--key-file", kf); code != 0 {
		t.Fatalf("intact key file: exit %d: %s", code, out)
	}
	i := len("blockwise-key-v2 ") + 10 // a hex digit of the secret
	flipped := bytes.Clone(good)
	flipped[i] = map[bool]byte{true: 'b', false: 'a'}[flipped[i] == 'a'] // still a hex digit
	for _, tc := range []struct {
		name string
		text []byte
	}{
		{"one hex digit changed", flipped},
		{"empty", nil},
		{"cut short", good[:40]},
	} {
		bad := filepath.Join(dir, "bad.key")
		os.WriteFile(bad, tc.text, 0o600)
		out, code := runRepoCLI(t, repoDir, nil, "points", "--key-file", bad)
		if code != exitCorrupt || !strings.Contains(out, "key file "+bad) || !strings.Contains(out, "damaged") {
			t.Errorf("key file %s: exit %d, want %d naming it damaged: %s", tc.name, code, exitCorrupt, out)
		}
	}
	other := filepath.Join(dir, "other.key")
	if out, code := runRepoCLI(t, filepath.Join(dir, "repo2"), pw, "repo", "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, filepath.Join(dir, "repo2"), pw, "repo", "key", "add", "--new-key-file", other); code != 0 {
		t.Fatalf("key add: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, repoDir, nil, "points", "--key-file", other); code != exitUnauthorized || !strings.Contains(out, "wrong password") {
		t.Errorf("another repository's intact key file: exit %d, want %d: %s", code, exitUnauthorized, out)
	}

	// Both slots in keys/ damaged: the password opens neither, and the
	// error names both.
	slots, _ := filepath.Glob(filepath.Join(repoDir, "keys", "*"))
	if len(slots) != 2 {
		t.Fatalf("key slots %v", slots)
	}
	for _, slot := range slots {
		b, err := os.ReadFile(slot)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-30] ^= 0x10
		if err := os.WriteFile(slot, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, code := runRepoCLI(t, repoDir, pw, "points")
	if code != exitCorrupt || !strings.Contains(out, "damaged") || !strings.Contains(out, "keys/"+filepath.Base(slots[0])) || !strings.Contains(out, filepath.Base(slots[1])) {
		t.Errorf("damaged key slots: exit %d, want %d naming both: %s", code, exitCorrupt, out)
	}
}

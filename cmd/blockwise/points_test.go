package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestPointsDeprecatedName: "points" lists restore points; the old name
// "snapshots" prints the same list and a deprecation note on stderr
// only, so scripts that parse stdout keep working; "points" prints no
// note.
func TestPointsDeprecatedName(t *testing.T) {
	repoDir := filepath.Join(t.TempDir(), "repo")
	env := []string{"BLOCKWISE_PASSWORD=pw"}
	if out, code := runRepoCLI(t, repoDir, env, "repo", "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	run := func(name string) (string, string) {
		cmd := cliCommand("", append(env, "BLOCKWISE_REPO="+repoDir, "BLOCKWISE_CACHE_DIR="+filepath.Join(t.TempDir(), "cache")), name, "--json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v: %s", name, err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	newOut, newErr := run("points")
	oldOut, oldErr := run("snapshots")
	if newOut != oldOut || strings.TrimSpace(newOut) == "" {
		t.Fatalf("points printed %q, snapshots %q", newOut, oldOut)
	}
	if strings.Contains(newErr, "deprecated") {
		t.Fatalf("points: %q", newErr)
	}
	if !strings.Contains(oldErr, `"snapshots" is deprecated, use "blockwise points"`) {
		t.Fatalf("snapshots: no deprecation note on stderr: %q", oldErr)
	}
}

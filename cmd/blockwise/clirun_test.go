package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The one CLI runner of the cmd/blockwise tests: TestMain builds the
// binary, cliCommand prepares a run of it, runCLI runs one, and cli (a
// datastore and an environment) runs many: the daemon's tests and the
// end-to-end tests embed it.

var binary string

// TestMain builds the binary once; the tests run it as operators do. Their
// cache directory is their own, not the user's.
func TestMain(m *testing.M) {
	if os.Getenv(quiesceChildEnv) != "" { // a child of TestQEMUSource
		quiesceChild()
		return
	}
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

// cliCommand is `blockwise --datastore dir args...` (no --datastore when
// dir is empty) in the test's environment without a remote host or token,
// plus env.
func cliCommand(dir string, env []string, args ...string) *exec.Cmd {
	if dir != "" {
		args = append([]string{"--datastore", dir}, args...)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "BLOCKWISE_HOST=", "BLOCKWISE_TOKEN="), env...)
	return cmd
}

// cliRun is what one run of the binary printed and how it exited.
type cliRun struct {
	stdout, stderr string
	combined       string // stdout and stderr as they interleaved
	code           int
}

// runCLI runs cmd (from cliCommand) to its end; a command that could not
// start fails the test.
func runCLI(t *testing.T, cmd *exec.Cmd) cliRun {
	t.Helper()
	var out, errb, both bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, &both), io.MultiWriter(&errb, &both)
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errb.String(), combined: both.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// cli runs the binary against the datastore dir with env added.
type cli struct {
	dir string
	env []string
	// combined: run returns stdout and stderr interleaved; otherwise
	// stdout, followed by stderr when the command fails.
	combined bool
}

func (c *cli) command(extraEnv []string, args ...string) *exec.Cmd {
	return cliCommand(c.dir, append(append([]string(nil), c.env...), extraEnv...), args...)
}

// runEnv runs the CLI with extraEnv; it returns its output and exit code.
func (c *cli) runEnv(t *testing.T, extraEnv []string, args ...string) (string, int) {
	t.Helper()
	r := runCLI(t, c.command(extraEnv, args...))
	switch {
	case c.combined:
		return r.combined, r.code
	case r.code != 0:
		return r.stdout + r.stderr, r.code
	}
	return r.stdout, 0
}

func (c *cli) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return c.runEnv(t, nil, args...)
}

// must runs the CLI and fails the test unless it exits 0.
func (c *cli) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := c.run(t, args...)
	if code != 0 {
		t.Fatalf("blockwise %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// jsonOut runs the CLI with --json and decodes its stdout into v.
func (c *cli) jsonOut(t *testing.T, v any, args ...string) {
	t.Helper()
	r := runCLI(t, c.command(nil, append(args, "--json")...))
	if r.code != 0 {
		t.Fatalf("blockwise %s: exit %d: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("blockwise %s: %v: %s", strings.Join(args, " "), err, r.stdout)
	}
}

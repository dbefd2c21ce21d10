package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/repo"
)

// problem is an error as the client returns it for the host's problem
// document of type typ.
func problem(typ string) error {
	return fmt.Errorf("blockwise: %w", &client.Error{Problem: client.Problem{Type: typ, Title: typ, Status: 400}})
}

// cobraError runs a small command tree, set up as main sets up the real
// one, with args and returns cobra's error.
func cobraError(t *testing.T, args ...string) error {
	t.Helper()
	root := &cobra.Command{Use: "bw", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().Int("n", 0, "a number")
	group := &cobra.Command{Use: "group"}
	group.AddCommand(&cobra.Command{Use: "one NAME", Args: cobra.ExactArgs(1), RunE: func(*cobra.Command, []string) error { return nil }})
	req := &cobra.Command{Use: "req", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	req.Flags().String("must", "", "a required flag")
	req.MarkFlagRequired("must")
	root.AddCommand(group, req)
	typeCobraErrors(root)
	root.SetArgs(args)
	root.SetOut(io.Discard)
	err := root.Execute()
	if err == nil {
		t.Fatalf("bw %s: no error", strings.Join(args, " "))
	}
	return err
}

// TestExitCodes maps a representative error of every sentinel the exit
// codes stand for, as the packages return them (wrapped), and cobra's own
// errors, to its code; and every code the README documents has a case.
func TestExitCodes(t *testing.T) {
	einval := fmt.Errorf("write /dev/nbd0: %w", &os.PathError{Op: "write", Path: "/dev/nbd0", Err: syscall.EINVAL})
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", errors.New("something broke"), exitFailure},
		{"EINVAL", einval, exitFailure}, // its text is "invalid argument", as pflag's
		{"bare EINVAL", syscall.EINVAL, exitFailure},
		{"client unavailable", problem(wire.ProblemUnavailable), exitFailure},
		{"client internal", problem(wire.ProblemInternal), exitFailure},

		{"usage", usageErrorf("give one of --a or --b"), exitUsage},
		{"wrapped usage", fmt.Errorf("restore: %w", usageErrorf("bad --to: %w", einval)), exitUsage},
		{"cobra unknown flag", cobraError(t, "--bogus"), exitUsage},
		{"cobra bad flag value", cobraError(t, "--n", "ten"), exitUsage},
		{"cobra flag needs an argument", cobraError(t, "req", "--must"), exitUsage},
		{"cobra unknown command", cobraError(t, "bogus"), exitUsage},
		{"cobra missing argument", cobraError(t, "group", "one"), exitUsage},
		{"cobra extra argument", cobraError(t, "req", "x", "--must", "y"), exitUsage},
		{"cobra required flag", cobraError(t, "req"), exitUsage},
		{"repo invalid", fmt.Errorf("repo: init: %w", repo.ErrInvalid), exitUsage},
		{"client invalid request", problem(wire.ProblemInvalidRequest), exitUsage},
		{"client out of range", problem(wire.ProblemOutOfRange), exitUsage},
		{"backup not this disk", fmt.Errorf("rollback: %w", backup.ErrNotThisDisk), exitUsage},
		{"backup ambiguous point", fmt.Errorf("restore: %w", backup.ErrAmbiguousPoint), exitUsage},
		{"fileres escape", fmt.Errorf("path %q: %w", "/part1/..", fileres.ErrEscape), exitUsage},
		{"fileres not a directory", fmt.Errorf("/part1/etc/hosts/x: %w", fileres.ErrNotDir), exitUsage},
		{"fileres unsupported", &fileres.VolumeError{Volume: "part4", Found: "xfs", Err: fileres.ErrUnsupported}, exitFailure},

		{"client disk not found", problem(wire.ProblemDiskNotFound), exitNotFound},
		{"client snapshot not found", problem(wire.ProblemSnapshotNotFound), exitNotFound},
		{"client task not found", problem(wire.ProblemTaskNotFound), exitNotFound},
		{"disk not found", fmt.Errorf("open vm1: %w", disk.ErrNotFound), exitNotFound},
		{"api token not found", fmt.Errorf("revoke: %w", api.ErrTokenNotFound), exitNotFound},
		{"repo not found", fmt.Errorf("restore point %q: %w", "abc", repo.ErrNotFound), exitNotFound},
		{"fileres not found", fmt.Errorf("/part1/etc/nope: %w", fileres.ErrNotFound), exitNotFound},

		{"client change ID invalid", problem(wire.ProblemChangeIDInvalid), exitInvalid},
		{"disk change ID invalid", fmt.Errorf("changes: %w", disk.ErrChangeIDInvalid), exitInvalid},
		{"backup change ID invalid", fmt.Errorf("rollback: %w", backup.ErrChangeIDInvalid), exitInvalid},

		{"client busy", problem(wire.ProblemDiskBusy), exitBusy},
		{"client too many tickets", problem(wire.ProblemTooManyTickets), exitBusy},
		{"client disk exists", problem(wire.ProblemDiskExists), exitBusy},
		{"client snapshot exists", problem(wire.ProblemSnapshotExists), exitBusy},
		{"disk busy", fmt.Errorf("open: %w", disk.ErrBusy), exitBusy},
		{"repo locked", fmt.Errorf("prune: %w", repo.ErrLocked), exitBusy},
		{"fileres mount busy", fmt.Errorf("mount: %w", fileres.ErrMountBusy), exitBusy},

		{"client corrupt", problem(wire.ProblemCorrupt), exitCorrupt},
		{"disk corrupt", fmt.Errorf("journal: %w", disk.ErrCorrupt), exitCorrupt},
		{"repo corrupt", fmt.Errorf("pack 1234: %w", repo.ErrCorrupt), exitCorrupt},
		{"root mismatch", fmt.Errorf("backup vm: %w: leaf 3 at offset 196608", backup.ErrRootMismatch), exitCorrupt},
		{"fileres damaged", &fileres.VolumeError{Volume: "part1", Found: "ext2/3/4", Err: fmt.Errorf("ext: bad superblock magic: %w", fileres.ErrDamaged)}, exitCorrupt},
		{"repo incomplete", fmt.Errorf("%w: blob abcd: %w", repo.ErrIncomplete, repo.ErrNotFound), exitCorrupt},

		{"client unauthorized", problem(wire.ProblemUnauthorized), exitUnauthorized},
		{"repo wrong password", fmt.Errorf("open: %w", repo.ErrWrongPassword), exitUnauthorized},

		{"check failed", fmt.Errorf("%w: 2 errors", errCheckFailed), exitCheckFailed},

		{"client no space", problem(wire.ProblemNoSpace), exitNoSpace},
		{"disk no space", fmt.Errorf("snapshot: %w: %w", disk.ErrNoSpace, syscall.ENOSPC), exitNoSpace},

		{"overlay in use", fmt.Errorf("overlay /x: %w", overlay.ErrInUse), exitBusy},
		{"overlay of another point", fmt.Errorf("overlay /x: %w", overlay.ErrMismatch), exitUsage},
		{"overlay damaged", fmt.Errorf("overlay /x: %w", overlay.ErrCorrupt), exitCorrupt},
		{"overlay full", fmt.Errorf("overlay /x: %w: %w", overlay.ErrNoSpace, syscall.ENOSPC), exitNoSpace},
		{"no recovery to resume", fmt.Errorf("/x: %w", backup.ErrNoRecovery), exitNotFound},
		{"client not supported", problem(wire.ProblemNotSupported), exitNotSupported},
		{"disk not supported", fmt.Errorf("copy: %w", disk.ErrNotSupported), exitNotSupported},
		{"client too large", problem(wire.ProblemTooLarge), exitUsage},
		{"client read-only", problem(wire.ProblemReadOnly), exitUsage},
		{"disk invalid", fmt.Errorf("reclaim: %w", disk.ErrInvalid), exitUsage},
	}
	covered := map[int]bool{}
	for _, c := range cases {
		covered[c.want] = true
		if got := exitCode(c.err); got != c.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", c.name, c.err, got, c.want)
		}
	}
	for _, code := range readmeExitCodes(t) {
		if !covered[code] {
			t.Errorf("exit code %d is in the README but has no case here", code)
		}
	}
}

// readmeExitCodes are the codes of the README's "Exit codes" table.
func readmeExitCodes(t *testing.T) []int {
	t.Helper()
	text, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(text), "### Exit codes")
	if !ok {
		t.Fatal(`README.md has no "### Exit codes"`)
	}
	table, _, _ = strings.Cut(table, "\n#")
	var codes []int
	for _, m := range regexp.MustCompile(`(?m)^\|\s*(\d+)\s*\|`).FindAllStringSubmatch(table, -1) {
		n, _ := strconv.Atoi(m[1])
		codes = append(codes, n)
	}
	if len(codes) < 9 {
		t.Fatalf("README exit codes table: found %v", codes)
	}
	return codes
}

// The real binary exits with the documented codes for errors of how it
// was called (cobra's and its own), of the repository, and not with 2 for
// a text that merely looks like cobra's.
func TestExitCodesBinary(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "repo")
	be, err := local.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "right", repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	for _, c := range []struct {
		env  []string
		args []string
		want int
	}{
		{nil, []string{"--bogus"}, exitUsage},
		{nil, []string{"bogus"}, exitUsage},
		{nil, []string{"disk", "info"}, exitUsage},
		{nil, []string{"disk", "info", "a", "b"}, exitUsage},
		{nil, []string{"completion", "bash", "extra"}, exitUsage},
		{nil, []string{"points", "--lock-wait", "soon"}, exitUsage},
		{nil, []string{"points"}, exitUsage}, // no repository given
		{[]string{"BLOCKWISE_REPO=" + filepath.Join(dir, "none"), "BLOCKWISE_PASSWORD=right"}, []string{"points"}, exitNotFound},
		{[]string{"BLOCKWISE_REPO=" + good, "BLOCKWISE_PASSWORD=wrong"}, []string{"points"}, exitUnauthorized},
		{[]string{"BLOCKWISE_REPO=" + good, "BLOCKWISE_PASSWORD=right"}, []string{"points"}, exitOK},
		{nil, []string{"help"}, exitOK},
		{nil, nil, exitOK},
	} {
		out, code := runBinary(t, dir, c.env, c.args...)
		if code != c.want {
			t.Errorf("%s blockwise %s: exit %d, want %d: %s", strings.Join(c.env, " "), strings.Join(c.args, " "), code, c.want, out)
		}
	}
}

// runBinary runs the CLI on the datastore dir with no daemon, the
// repository environment cleared but for env; it returns stdout+stderr
// and the exit code.
func runBinary(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--datastore", dir}, args...)...)
	cmd.Env = append(append(os.Environ(), "BLOCKWISE_HOST=", "BLOCKWISE_TOKEN=", "BLOCKWISE_REPO=", "BLOCKWISE_PASSWORD_FILE=", "BLOCKWISE_KEY_FILE="), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

package main

// Shared helpers of the end-to-end tests (e2e_*_test.go): a running
// `blockwise serve` plus a repository, qemu-io writes and the references
// they are compared with, and the checks every test ends with.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

const e2eBlock = 64 << 10 // CBT granularity and repository chunk size

// e2e is a running `blockwise serve` plus a repository.
type e2e struct {
	cli
	d    *serveProc
	repo string
	// damaged skips the check at the end of the test, for tests that
	// damage the repository on purpose; checkEnv is the environment that
	// check runs with when the test changed how the repository opens.
	damaged  bool
	checkEnv []string
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh installs it)", tool)
		}
	}
}

// newE2E starts a daemon. With cheapKDF the repository is created in
// process with cheap Argon2id parameters (stored in its key file, so every
// CLI call opens it in milliseconds) and small packs, for the loops;
// otherwise `blockwise repo init` creates it with the defaults.
func newE2E(t *testing.T, cheapKDF bool) *e2e {
	t.Helper()
	if !cheapKDF {
		return newE2EOpts(t, nil)
	}
	return newE2EOpts(t, &repo.Options{PackSize: 256 << 10})
}

// newE2EOpts: with opts nil `blockwise repo init` creates the repository
// (production defaults); otherwise it is created in process with opts and
// cheap Argon2id parameters.
func newE2EOpts(t *testing.T, opts *repo.Options) *e2e {
	t.Helper()
	needTools(t, "qemu-io", "qemu-img")
	e := &e2e{d: startServe(t), repo: filepath.Join(t.TempDir(), "repo")}
	e.cli = cli{dir: e.d.dir, combined: true}
	e.env = []string{"BLOCKWISE_REPO=" + e.repo, "BLOCKWISE_PASSWORD=correct horse", "BLOCKWISE_PASSWORD_FILE="}
	if opts != nil {
		be, err := local.Open(e.repo)
		if err != nil {
			t.Fatal(err)
		}
		o := *opts
		o.KDF = repo.KDFParams{Time: 1, Memory: 64, Threads: 1}
		r, err := repo.Init(context.Background(), be, "correct horse", o)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	} else {
		e.must(t, "repo", "init")
	}
	e.checkAfterTest(t)
	return e
}

// checkAfterTest runs `check --read-data` when the test ends: whatever a
// test did, killed commands included, must leave the repository clean.
func (e *e2e) checkAfterTest(t *testing.T) {
	repotest.CheckAtEnd(t, func() bool { return e.damaged }, func(context.Context) error {
		if out, code := e.runEnv(t, e.checkEnv, "check", "--read-data"); code != 0 {
			return fmt.Errorf("check --read-data: exit %d: %s", code, out)
		}
		return nil
	})
}

func (e *e2e) uri(disk string) string {
	return "nbd+unix:///" + disk + "?socket=" + filepath.Join(e.d.dir, "nbd.sock")
}

// write is one qemu-io command and what it touches.
type write struct {
	cmd      string
	off, n   int64
	zero     bool
	srcBytes []byte // -s source file contents (random data)
}

// randomWrites makes n writes inside [0, size): a third random data, a
// third a byte pattern, some zeroes; offsets 512-aligned, 4 KiB–maxLen.
func randomWrites(rng *rand.Rand, size int64, n int, maxLen int64) []write {
	var ws []write
	for i := 0; i < n; i++ {
		l := (4<<10 + rng.Int64N(maxLen-4<<10)) &^ 511
		off := rng.Int64N(size-l) &^ 511
		w := write{off: off, n: l}
		switch k := rng.IntN(10); {
		case k < 4:
			w.srcBytes = make([]byte, l)
			for j := range w.srcBytes {
				w.srcBytes[j] = byte(rng.Uint32())
			}
		case k < 9:
			w.cmd = fmt.Sprintf("write -q -P 0x%02x %d %d", 1+rng.IntN(255), off, l)
		default:
			w.zero = true
			w.cmd = fmt.Sprintf("write -q -z %d %d", off, l)
		}
		ws = append(ws, w)
	}
	return ws
}

// apply performs the writes through NBD with qemu-io and returns the
// number of distinct 64 KiB blocks touched, all and those holding
// non-zero data afterwards.
func (e *e2e) apply(t *testing.T, disk string, ws []write) (blocks, dataBlocks int64) {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-f", "raw"}
	all, data := map[int64]bool{}, map[int64]bool{}
	for i, w := range ws {
		cmd := w.cmd
		if w.srcBytes != nil {
			src := filepath.Join(dir, fmt.Sprintf("src%d", i))
			if err := os.WriteFile(src, w.srcBytes, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd = fmt.Sprintf("write -q -s %s %d %d", src, w.off, w.n)
		}
		args = append(args, "-c", cmd)
		for b := w.off / e2eBlock; b*e2eBlock < w.off+w.n; b++ {
			all[b] = true
		}
		for s := w.off / 512; s < (w.off+w.n)/512; s++ {
			data[s] = !w.zero // the last write to a sector wins
		}
	}
	dataBlk := map[int64]bool{}
	for s, nonzero := range data {
		if nonzero {
			dataBlk[s*512/e2eBlock] = true
		}
	}
	args = append(args, "-c", "flush", e.uri(disk))
	if out, err := exec.Command("qemu-io", args...).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	return int64(len(all)), int64(len(dataBlk))
}

// reference copies the disk's current (quiescent) state with qemu-img.
func (e *e2e) reference(t *testing.T, disk, path string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", e.uri(disk), path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
}

// count returns the number of files of a repository directory (index,
// data, ...), through its fan-out subdirectories.
func (e *e2e) count(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(e.repo, dir), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

func (e *e2e) points(t *testing.T) []backupRow {
	t.Helper()
	var rows []backupRow
	e.jsonOut(t, &rows, "points")
	return rows
}

func (e *e2e) backupJSON(t *testing.T, disk string) backupSummary {
	t.Helper()
	var s backupSummary
	e.jsonOut(t, &s, "backup", disk)
	return s
}

// restoreEquals restores a point to a new file and compares it with ref.
func (e *e2e) restoreEquals(t *testing.T, id, ref string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.raw")
	e.must(t, "restore", id, "--to", out)
	if err := sameFile(out, ref); err != nil {
		t.Fatalf("restore point %s: %v", id[:12], err)
	}
	os.Remove(out)
}

func sameFile(a, b string) error {
	x, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if len(x) != len(y) {
		return fmt.Errorf("%s has %d bytes, %s %d", a, len(x), b, len(y))
	}
	for i := range x {
		if x[i] != y[i] {
			return fmt.Errorf("%s and %s first differ at byte %d", a, b, i)
		}
	}
	return nil
}

func (e *e2e) hostSnapshots(t *testing.T, disk string) []client.Snapshot {
	t.Helper()
	var snaps []client.Snapshot
	e.jsonOut(t, &snaps, "snapshot", "list", disk)
	return snaps
}

// knownProblem reports behaviour that contradicts issue 5: a failure.
func knownProblem(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("PROBLEM: "+format, args...)
}

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("BLOCKWISE_E2E_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (BLOCKWISE_E2E_SEED)", s)
	return s
}

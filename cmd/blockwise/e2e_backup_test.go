package main

// End-to-end tests of issue 5 (backup, restore, forget/prune, crashes,
// corruption, operator errors) with the real daemon, the real CLI binary
// built by TestMain, and the real NBD clients qemu-io and qemu-img.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
)

const e2eBlock = 64 << 10 // CBT granularity and repository chunk size

// e2e is a running `blockwise serve` plus a repository.
type e2e struct {
	d    *daemon
	repo string
	env  []string
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
	needTools(t, "qemu-io", "qemu-img")
	e := &e2e{d: startServe(t), repo: filepath.Join(t.TempDir(), "repo")}
	e.env = []string{"BLOCKWISE_REPO=" + e.repo, "BLOCKWISE_PASSWORD=correct horse", "BLOCKWISE_PASSWORD_FILE="}
	if cheapKDF {
		be, err := local.Open(e.repo)
		if err != nil {
			t.Fatal(err)
		}
		r, err := repo.Init(context.Background(), be, "correct horse",
			repo.Options{PackSize: 256 << 10, KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	} else {
		e.must(t, "repo", "init")
	}
	return e
}

func (e *e2e) command(extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"--datastore", e.d.dir}, args...)...)
	cmd.Env = append(append(os.Environ(), "BLOCKWISE_HOST=", "BLOCKWISE_TOKEN="), append(e.env, extraEnv...)...)
	return cmd
}

// runEnv runs the CLI; it returns stdout+stderr and the exit code.
func (e *e2e) runEnv(t *testing.T, extraEnv []string, args ...string) (string, int) {
	t.Helper()
	cmd := e.command(extraEnv, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func (e *e2e) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return e.runEnv(t, nil, args...)
}

func (e *e2e) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := e.run(t, args...)
	if code != 0 {
		t.Fatalf("blockwise %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

func (e *e2e) jsonOut(t *testing.T, v any, args ...string) {
	t.Helper()
	cmd := e.command(nil, append(args, "--json")...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("blockwise %s: %v: %s%s", strings.Join(args, " "), err, out, errb.String())
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("blockwise %s: %v: %s", strings.Join(args, " "), err, out)
	}
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

func (e *e2e) points(t *testing.T) []backupRow {
	t.Helper()
	var rows []backupRow
	e.jsonOut(t, &rows, "snapshots")
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

// knownProblem reports behaviour that contradicts issue 5 but is not in
// this test's scope to fix: logged, and fatal with BLOCKWISE_E2E_STRICT=1.
func knownProblem(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("BLOCKWISE_E2E_STRICT") != "" {
		t.Fatalf("KNOWN PROBLEM: "+format, args...)
	}
	t.Logf("KNOWN PROBLEM (fatal with BLOCKWISE_E2E_STRICT=1): "+format, args...)
}

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("BLOCKWISE_E2E_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (BLOCKWISE_E2E_SEED)", s)
	return s
}

// TestE2EBackupGenerations: full → qemu-io writes → incremental, five
// generations; every point
// restores bit-identical to the qemu-img copy taken before its backup,
// an incremental reads only about what changed, then forget --keep-last 2
// --prune keeps the kept points restorable.
func TestE2EBackupGenerations(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	const size = 64 << 20
	e.must(t, "disk", "create", "vm", "--size", "64M")
	refDir := t.TempDir()
	type gen struct {
		id, ref string
	}
	var gens []gen
	for g := 0; g < 5; g++ {
		n := 6
		if g == 0 {
			n = 40 // the full backup's content
		}
		blocks, dataBlocks := e.apply(t, "vm", randomWrites(rng, size, n, 1<<20))
		ref := filepath.Join(refDir, fmt.Sprintf("ref-%d.raw", g))
		e.reference(t, "vm", ref)
		s := e.backupJSON(t, "vm")
		wantMode := "incremental"
		if g == 0 {
			wantMode = "full"
		}
		t.Logf("gen %d: %s, touched %d blocks (%d with data), changed %d, read %d, new %d, stored %d, %.2fs",
			g, s.Mode, blocks, dataBlocks, s.Changed, s.Read, s.NewBytes, s.Stored, s.Seconds)
		if s.Mode != wantMode {
			t.Fatalf("gen %d: mode %q (%s), want %s", g, s.Mode, s.Reason, wantMode)
		}
		if g > 0 && s.Parent != gens[g-1].id {
			t.Fatalf("gen %d: parent %s, want %s", g, s.Parent, gens[g-1].id)
		}
		// A full backup reads the allocated blocks; an incremental what CBT
		// says changed. Both ≈ the touched blocks, never the whole disk.
		if s.Read > blocks*e2eBlock*3/2 || s.Read < dataBlocks*e2eBlock {
			t.Fatalf("gen %d: read %d bytes; touched %d blocks (%d bytes), %d with data", g, s.Read, blocks, blocks*e2eBlock, dataBlocks)
		}
		if snaps := e.hostSnapshots(t, "vm"); len(snaps) != 0 {
			t.Fatalf("gen %d: backup left snapshots on the host: %+v", g, snaps)
		}
		gens = append(gens, gen{s.ID, ref})
		// What the catalogue says must match what the backup said.
		rows := e.points(t)
		if len(rows) != g+1 || rows[g].ID != s.ID || int64(rows[g].Read) != s.Read || rows[g].NewBytes != s.NewBytes {
			t.Fatalf("gen %d: snapshots --json %+v, backup said %+v", g, rows, s)
		}
		if g > 0 && rows[g].Read > uint64(blocks*e2eBlock*3/2) {
			t.Fatalf("gen %d: snapshots reports %d bytes read for an incremental touching %d blocks", g, rows[g].Read, blocks)
		}
	}
	for _, g := range gens {
		e.restoreEquals(t, g.id, g.ref)
	}
	// latest resolves to the newest point.
	out := filepath.Join(t.TempDir(), "latest.raw")
	e.must(t, "restore", "latest", "--disk", "vm", "--to", out)
	if err := sameFile(out, gens[len(gens)-1].ref); err != nil {
		t.Fatal(err)
	}
	if _, code := e.run(t, "restore", "latest", "--to", out); code == 0 {
		t.Fatal("restore over an existing file succeeded")
	}

	e.must(t, "forget", "--keep-last", "2", "--prune")
	rows := e.points(t)
	if len(rows) != 2 || rows[0].ID != gens[3].id || rows[1].ID != gens[4].id {
		t.Fatalf("after forget --keep-last 2: %+v", rows)
	}
	e.must(t, "check", "--read-data")
	for _, g := range gens[3:] {
		e.restoreEquals(t, g.id, g.ref)
	}
	for _, g := range gens[:3] {
		if out, code := e.run(t, "restore", g.id, "--to", filepath.Join(t.TempDir(), "x.raw")); code != exitNotFound {
			t.Fatalf("restore of forgotten %s: exit %d: %s", g.id[:12], code, out)
		}
	}
	// The next incremental still works from the kept parent.
	e.apply(t, "vm", randomWrites(rng, size, 3, 256<<10))
	ref := filepath.Join(refDir, "ref-5.raw")
	e.reference(t, "vm", ref)
	if s := e.backupJSON(t, "vm"); s.Mode != "incremental" || s.Parent != gens[4].id {
		t.Fatalf("backup after prune: %+v", s)
	} else {
		e.restoreEquals(t, s.ID, ref)
	}
}

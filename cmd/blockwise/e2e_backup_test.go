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
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
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
	t.Cleanup(func() { e.checkAfterTest(t) })
	return e
}

// checkAfterTest runs `check --read-data` when the test ends: whatever a
// test did, killed commands included, must leave the repository clean.
func (e *e2e) checkAfterTest(t *testing.T) {
	if e.damaged || t.Failed() {
		return
	}
	if out, code := e.runEnv(t, e.checkEnv, "check", "--read-data"); code != 0 {
		t.Errorf("after the test: check --read-data: exit %d: %s", code, out)
	}
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
		if len(rows) != g+1 || rows[g].ID != s.ID || int64(rows[g].Read) != s.Read || rows[g].NewBytes != s.NewBytes ||
			int64(rows[g].Changed) != s.Changed || s.Changed == 0 {
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

	// A span covering every point keeps them all; a bad span is a usage
	// error.
	if o, code := e.run(t, "forget", "--keep-within", "1h", "--dry-run"); code != 0 ||
		strings.Count(o, ": within 1h") != len(gens) || strings.Contains(o, "would forget") {
		t.Fatalf("forget --keep-within 1h --dry-run: exit %d: %s", code, o)
	}
	if o, code := e.run(t, "forget", "--keep-within", "7x"); code != 2 {
		t.Fatalf("forget --keep-within 7x: exit %d: %s", code, o)
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

// killAfter starts a CLI command, SIGKILLs it after delay and reports
// whether it had exited on its own with status 0 first.
func (e *e2e) killAfter(t *testing.T, delay time.Duration, args ...string) (completed bool, out string) {
	t.Helper()
	cmd := e.command(nil, args...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blockwise %s failed before the kill: %v: %s", strings.Join(args, " "), err, b.String())
		}
		return true, b.String()
	case <-time.After(delay):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := <-done
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
		return false, b.String()
	}
	if err != nil {
		t.Fatalf("blockwise %s: %v: %s", strings.Join(args, " "), err, b.String())
	}
	return true, b.String() // exited 0 just before the signal
}

// staleLocks counts lock files left by killed processes. They stay: the
// next command must see that their holders are dead and go on.
func (e *e2e) staleLocks(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.repo, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// removeSnapshot deletes a snapshot, retrying while the host still
// closes the killed process's NBD connection.
func (e *e2e) removeSnapshot(t *testing.T, disk, id string) {
	t.Helper()
	for i := 0; ; i++ {
		out, code := e.run(t, "snapshot", "rm", disk, id)
		if code == 0 {
			return
		}
		if code != exitBusy || i == 50 {
			t.Fatalf("snapshot rm %s %s: exit %d: %s", disk, id, code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ids(rows []backupRow) map[string]bool {
	m := map[string]bool{}
	for _, r := range rows {
		m[r.ID] = true
	}
	return m
}

// TestE2EKill SIGKILLs `blockwise backup`, and `blockwise prune` or
// `blockwise repair index`, at random moments, alternately (20 times with
// CI set, 6 otherwise); after each kill
// `check --read-data` must pass and committed points must restore
// bit-identical to the qemu-img copy taken before their backup. Packs of
// 16 KiB hold one chunk each, so every backup here writes index files as
// it goes (one per 64 packs) and kills land between them too.
func TestE2EKill(t *testing.T) {
	e := newE2EOpts(t, &repo.Options{PackSize: 16 << 10})
	rng := rand.New(rand.NewPCG(seed(t), 2))
	const size = 32 << 20
	e.must(t, "disk", "create", "vm", "--size", "32M")
	iters := 6
	if os.Getenv("CI") != "" {
		iters = 20
	}
	deadline := time.Now().Add(75 * time.Second)
	refDir := t.TempDir()
	refs := map[string]string{} // restore point → reference image
	e.apply(t, "vm", randomWrites(rng, size, 30, 1<<20))
	refs[e.reference0(t, refDir, "vm")] = filepath.Join(refDir, "ref-0.raw")
	// Prune and repair kill delays are drawn from a quarter to five
	// quarters of the last completed run's duration, so that most kills
	// land while the command works rather than while it starts.
	backupDur, pruneDur, repairDur := time.Second, 200*time.Millisecond, 200*time.Millisecond
	var killedBackups, committedAfterKill, leftSnapshots, lockedAfterKill, killedPrunes, killedRepairs int
	var stats []string
	for i := 1; i <= iters; i++ {
		if time.Now().After(deadline) {
			t.Logf("stopping after %d iterations: time budget spent", i-1)
			break
		}
		before := ids(e.points(t))
		idxBefore := e.count(t, "index")
		if i%2 == 1 { // kill a backup: enough changes for a few index files
			e.apply(t, "vm", randomWrites(rng, size, 40, 1<<20))
			ref := filepath.Join(refDir, fmt.Sprintf("ref-%d.raw", i))
			e.reference(t, "vm", ref)
			delay := time.Duration(rng.Int64N(int64(backupDur) * 3 / 2))
			start := time.Now()
			completed, out := e.killAfter(t, delay, "backup", "vm", "--json")
			if completed {
				backupDur = time.Since(start)
			} else {
				killedBackups++
			}
			var fresh []string
			for _, r := range e.points(t) {
				if !before[r.ID] {
					fresh = append(fresh, r.ID)
				}
			}
			switch {
			case len(fresh) > 1:
				t.Fatalf("iteration %d: one backup committed %d points", i, len(fresh))
			case len(fresh) == 1:
				refs[fresh[0]] = ref
				if !completed {
					committedAfterKill++
				}
			case completed:
				t.Fatalf("iteration %d: backup exited 0 but committed nothing: %s", i, out)
			}
			snaps := e.hostSnapshots(t, "vm")
			if completed && len(snaps) > 0 {
				t.Fatalf("iteration %d: a completed backup left snapshots %+v", i, snaps)
			}
			for _, s := range snaps {
				if !strings.HasPrefix(s.Description, "blockwise backup") {
					t.Fatalf("iteration %d: unexpected snapshot %+v", i, s)
				}
				leftSnapshots++ // the next backup must remove it
			}
			if n := e.staleLocks(t); n > 0 && !completed {
				lockedAfterKill++
			}
			stats = append(stats, fmt.Sprintf("backup kill@%v completed=%v new=%d snaps=%d index files +%d",
				delay.Round(time.Millisecond), completed, len(fresh), len(snaps), e.count(t, "index")-idxBefore))
		} else if i%4 == 0 { // kill repair index: new and old index files side by side
			args := []string{"repair", "index"}
			if i%8 == 0 {
				args = append(args, "--read-all-packs")
			}
			delay := repairDur/4 + time.Duration(rng.Int64N(int64(repairDur)))
			start := time.Now()
			completed, _ := e.killAfter(t, delay, args...)
			if completed {
				repairDur = time.Since(start)
			} else {
				killedRepairs++
			}
			e.staleLocks(t)
			stats = append(stats, fmt.Sprintf("%s kill@%v completed=%v index files %d -> %d",
				strings.Join(args, " "), delay.Round(time.Millisecond), completed, idxBefore, e.count(t, "index")))
		} else { // forget the oldest point, then kill prune
			if rows := e.points(t); len(rows) > 1 {
				e.must(t, "forget", rows[0].ID)
				delete(refs, rows[0].ID)
			}
			delay := pruneDur/4 + time.Duration(rng.Int64N(int64(pruneDur)))
			start := time.Now()
			completed, _ := e.killAfter(t, delay, "prune")
			if completed {
				pruneDur = time.Since(start)
			} else {
				killedPrunes++
			}
			e.staleLocks(t)
			stats = append(stats, fmt.Sprintf("prune kill@%v completed=%v", delay.Round(time.Millisecond), completed))
		}
		if out, code := e.run(t, "check", "--read-data"); code != 0 {
			t.Fatalf("iteration %d (%s): check --read-data: exit %d: %s", i, stats[len(stats)-1], code, out)
		}
		rows := e.points(t)
		if len(rows) != len(refs) {
			t.Fatalf("iteration %d: %d points in the repository, %d committed", i, len(rows), len(refs))
		}
		if i%2 == 0 { // after a prune every point; after a backup the newest
			for _, r := range rows {
				e.restoreEquals(t, r.ID, refs[r.ID])
			}
		} else {
			e.restoreEquals(t, rows[len(rows)-1].ID, refs[rows[len(rows)-1].ID])
		}
	}
	t.Logf("%s", strings.Join(stats, "\n"))
	t.Logf("killed %d backups (%d had committed, %d left their snapshot on the host, %d left a lock), %d prunes, %d index repairs",
		killedBackups, committedAfterKill, leftSnapshots, lockedAfterKill, killedPrunes, killedRepairs)
	// A clean prune removes every leftover; then check sees no warnings
	// and every point still restores; the next backup is incremental.
	e.must(t, "prune")
	if out := e.must(t, "check", "--read-data"); !strings.Contains(out, " 0 errors, 0 warnings") {
		t.Fatalf("check after prune: %s", out)
	}
	rows := e.points(t)
	for _, r := range rows {
		e.restoreEquals(t, r.ID, refs[r.ID])
	}
	e.apply(t, "vm", randomWrites(rng, size, 3, 256<<10))
	ref := filepath.Join(refDir, "ref-last.raw")
	e.reference(t, "vm", ref)
	s := e.backupJSON(t, "vm")
	if s.Mode != "incremental" || s.Parent != rows[len(rows)-1].ID {
		t.Fatalf("backup after the kills: %+v", s)
	}
	e.restoreEquals(t, s.ID, ref)
}

// reference0 takes the first reference and full backup; it returns the ID.
func (e *e2e) reference0(t *testing.T, dir, disk string) string {
	t.Helper()
	e.reference(t, disk, filepath.Join(dir, "ref-0.raw"))
	s := e.backupJSON(t, disk)
	if s.Mode != "full" {
		t.Fatalf("first backup: %+v", s)
	}
	return s.ID
}

// TestE2EStaleLockAfterKill: after kill -9 of a backup, prune must not be
// blocked for the lock's whole 30-minute TTL by a lock whose holder (same
// host, dead PID) is provably gone.
func TestE2EStaleLockAfterKill(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 3))
	e.must(t, "disk", "create", "vm", "--size", "32M")
	for try := 0; ; try++ {
		e.apply(t, "vm", randomWrites(rng, 32<<20, 20, 1<<20))
		// Kill once the backup holds its lock.
		cmd := e.command(nil, "backup", "vm")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		locked := false
		for j := 0; j < 200 && !locked; j++ {
			ents, _ := os.ReadDir(filepath.Join(e.repo, "locks"))
			locked = len(ents) > 0
			if !locked {
				time.Sleep(5 * time.Millisecond)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ents, _ := os.ReadDir(filepath.Join(e.repo, "locks")); len(ents) > 0 {
			break
		}
		if try == 5 {
			t.Skip("could not kill a backup while it held its lock")
		}
	}
	for _, s := range e.hostSnapshots(t, "vm") {
		e.removeSnapshot(t, "vm", s.ID)
	}
	out, code := e.run(t, "prune")
	if code == exitBusy {
		knownProblem(t, "prune after a kill -9'd backup: exit %d: %s", code, strings.TrimSpace(out))
		e.staleLocks(t)
		return
	}
	if code != 0 {
		t.Fatalf("prune: exit %d: %s", code, out)
	}
}

// TestE2ECorruptPack flips one byte of a pack file: check --read-data
// exits 8 and restore fails naming the offset and the restore point.
func TestE2ECorruptPack(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 4))
	e.must(t, "disk", "create", "vm", "--size", "16M")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	e.apply(t, "vm", []write{{off: 2 << 20, n: 1 << 20, srcBytes: data}})
	s := e.backupJSON(t, "vm")
	e.must(t, "check", "--read-data")
	pack := corruptLargestPack(t, e)

	// Of three fixed subsets, exactly the one holding the pack finds it.
	failed := 0
	for n := 1; n <= 3; n++ {
		out, code := e.run(t, "check", "--read-data-subset", fmt.Sprintf("%d/3", n))
		if code != 0 {
			failed++
			if code != exitCheckFailed || !strings.Contains(out, filepath.Base(pack)[:8]) {
				t.Fatalf("check --read-data-subset %d/3: exit %d: %s", n, code, out)
			}
		}
	}
	if failed != 1 {
		t.Fatalf("%d of the subsets 1/3, 2/3, 3/3 found the flipped byte, want 1", failed)
	}
	out, code := e.run(t, "check", "--read-data")
	if code == 0 || !strings.Contains(out, filepath.Base(pack)[:8]) {
		t.Fatalf("check --read-data on a flipped byte in %s: exit %d: %s", filepath.Base(pack), code, out)
	}
	if code != exitCheckFailed {
		// runRepoCheck returns Check's joined error before printing the
		// findings, so exit 8 is never reached (6 = ErrCorrupt instead).
		knownProblem(t, "check --read-data on a corrupt pack: exit %d, want %d (findings not listed): %s", code, exitCheckFailed, strings.TrimSpace(out))
	}
	target := filepath.Join(t.TempDir(), "out.raw")
	out, code = e.run(t, "restore", s.ID, "--to", target)
	if code == 0 {
		t.Fatalf("restore from a corrupt pack succeeded: %s", out)
	}
	m := regexp.MustCompile(`offset (\d+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, s.ID[:8]) {
		// Same errgroup bug as on a full disk: "context canceled" wins.
		knownProblem(t, "restore from a corrupt chunk names no offset or restore point: exit %d: %s", code, strings.TrimSpace(out))
	} else if off, _ := strconv.ParseInt(m[1], 10, 64); off%e2eBlock != 0 || off < 2<<20 || off >= 3<<20 {
		t.Fatalf("restore names offset %d, the data is at [%d, %d): %s", off, 2<<20, 3<<20, out)
	}
	t.Logf("restore: exit %d: %s", code, strings.TrimSpace(out))
	if _, err := os.Stat(target); err == nil {
		knownProblem(t, "a failed restore leaves the partial image %s behind (looks like a valid raw image)", target)
	}
}

// TestE2EOperatorErrors: wrong password, missing repository, no
// password, and a restore target that runs out of space.
func TestE2EOperatorErrors(t *testing.T) {
	e := newE2E(t, false) // `repo init`, production key derivation
	out, code := e.runEnv(t, []string{"BLOCKWISE_PASSWORD=wrong"}, "snapshots")
	if code != exitUnauthorized || !strings.Contains(out, "wrong password") {
		t.Fatalf("wrong password: exit %d: %s", code, out)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("also wrong\n"), 0o600)
	if out, code := e.run(t, "snapshots", "--password-file", pwFile); code != exitUnauthorized {
		t.Fatalf("wrong password file: exit %d: %s", code, out)
	}
	if out, code := e.runEnv(t, []string{"BLOCKWISE_PASSWORD="}, "repo", "info"); code != exitUsage || !strings.Contains(out, "empty password") {
		t.Fatalf("empty password: exit %d: %s", code, out) // TestEmptyPasswordCLI has the rest
	}
	missing := filepath.Join(t.TempDir(), "nope")
	out, code = e.run(t, "snapshots", "--repo", missing)
	if code == 0 || !strings.Contains(out, "not found") {
		t.Fatalf("missing repository: exit %d: %s", code, out)
	}
	t.Logf("missing repository: exit %d: %s", code, strings.TrimSpace(out))
	if _, err := os.Stat(missing); err == nil {
		knownProblem(t, "opening a missing repository creates its directories (%s) and says %q instead of 'no repository at …; run blockwise repo init'", missing, strings.TrimSpace(out))
	}
	cmd := exec.Command(binary, "snapshots")
	cmd.Env = append(os.Environ(), "BLOCKWISE_REPO="+e.repo, "BLOCKWISE_PASSWORD_FILE=")
	cmd.Env = slicesWithout(cmd.Env, "BLOCKWISE_PASSWORD=")
	if out, err := cmd.CombinedOutput(); exitOf(err) != exitUsage {
		t.Fatalf("no password: %v: %s", err, out)
	}

	// Full disk: a restore into a 1 MiB tmpfs.
	rng := rand.New(rand.NewPCG(seed(t), 5))
	e.must(t, "disk", "create", "vm", "--size", "16M")
	e.apply(t, "vm", randomWrites(rng, 16<<20, 12, 1<<20))
	s := e.backupJSON(t, "vm")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Logf("full-disk case skipped: mount tmpfs: %v: %s", err, out)
		return
	}
	defer exec.Command("umount", mnt).Run()
	target := filepath.Join(mnt, "out.raw")
	out, code = e.run(t, "restore", s.ID, "--to", target)
	if code == 0 {
		t.Fatalf("restore onto a full file system succeeded: %s", out)
	}
	if !strings.Contains(out, "no space left") {
		// writeSlots keeps the iterator's "context canceled" and drops
		// the worker's error from g.Wait().
		knownProblem(t, "restore onto a full file system does not say why: exit %d: %s", code, strings.TrimSpace(out))
	}
	t.Logf("full disk: exit %d: %s", code, strings.TrimSpace(out))
	if _, err := os.Stat(target); err == nil {
		knownProblem(t, "a restore that ran out of space leaves the partial image %s behind", target)
	}
}

func slicesWithout(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

func exitOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestE2EConcurrentOpen: read-only commands (which open the repository)
// while a backup uploads packs must not make the backup fail.
func TestE2EConcurrentOpen(t *testing.T) {
	e := newE2EOpts(t, &repo.Options{}) // default 16 MiB packs: long temp-file writes
	rng := rand.New(rand.NewPCG(seed(t), 6))
	e.must(t, "disk", "create", "vm", "--size", "48M")
	var ws []write
	for off := int64(0); off < 40<<20; off += 4 << 20 {
		b := make([]byte, 4<<20)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		ws = append(ws, write{off: off, n: 4 << 20, srcBytes: b})
	}
	e.apply(t, "vm", ws)
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	cmd := e.command(nil, "backup", "vm", "--json")
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	opens := 0
	var err error
loop:
	for {
		select {
		case err = <-done:
			break loop
		default:
		}
		e.run(t, "snapshots") // opens the repository; may fail while busy
		opens++
	}
	t.Logf("%d concurrent opens during the backup", opens)
	if err != nil {
		knownProblem(t, "backup failed while other commands opened the repository: %v: %s", err, strings.TrimSpace(b.String()))
		return
	}
	var s backupSummary
	if err := json.Unmarshal(b.Bytes(), &s); err != nil {
		t.Fatalf("%v: %s", err, b.String())
	}
	e.restoreEquals(t, s.ID, ref)
}

// TestE2EKeyFile: a key file made by `repo key add` backs up and restores
// without the password; removing the password's slot revokes it; a
// damaged or foreign key file fails clearly; the last slot stays.
func TestE2EKeyFile(t *testing.T) {
	e := newE2E(t, false)
	dir := t.TempDir()
	kf := filepath.Join(dir, "backup.key")
	e.must(t, "repo", "key", "add", "--new-key-file", kf)
	if fi, err := os.Stat(kf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, code := e.run(t, "repo", "key", "add", "--new-key-file", kf); code == 0 {
		t.Fatal("key add overwrote an existing key file")
	}
	noPW := []string{"BLOCKWISE_PASSWORD=", "BLOCKWISE_KEY_FILE=" + kf}
	e.checkEnv = noPW // the test revokes the password
	e.must(t, "disk", "create", "vm", "--size", "8M")
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(7, 8)), 8<<20, 4, 256<<10))
	ref := filepath.Join(dir, "ref.raw")
	e.reference(t, "vm", ref)
	out, code := e.runEnv(t, noPW, "backup", "vm", "--json")
	var sum backupSummary
	if code != 0 || json.Unmarshal([]byte(out), &sum) != nil {
		t.Fatalf("backup with key file: exit %d: %s", code, out)
	}
	for _, p := range []string{"prepare", "snapshot", "changes", "copy", "commit", "release"} {
		if _, ok := sum.Phases[p]; !ok {
			t.Fatalf("backup --json has no %q phase: %s", p, out)
		}
	}
	if sum.Open["unlock"] <= 0 || sum.Open["index"] <= 0 {
		t.Fatalf("backup --json: open times %v, want unlock and index", sum.Open)
	}
	pwFile := filepath.Join(dir, "second.pw")
	os.WriteFile(pwFile, []byte("second password\n"), 0o600)
	e.must(t, "repo", "key", "add", "--new-password-file", pwFile)
	if o, code := e.runEnv(t, []string{"BLOCKWISE_PASSWORD=second password"}, "snapshots"); code != 0 {
		t.Fatalf("added password: exit %d: %s", code, o)
	}
	var keys []keyRow
	e.jsonOut(t, &keys, "repo", "key", "list")
	if len(keys) != 3 {
		t.Fatalf("keys: %+v", keys)
	}
	for _, k := range keys {
		if k.Kind == "password" {
			if out, code := e.runEnv(t, noPW, "repo", "key", "remove", k.ID[:12]); code != 0 {
				t.Fatalf("remove password slot: exit %d: %s", code, out)
			}
		}
	}
	if out, code := e.run(t, "snapshots"); code != exitUnauthorized {
		t.Fatalf("revoked password: exit %d: %s", code, out)
	}
	restored := filepath.Join(dir, "restored.raw")
	if o, code := e.runEnv(t, noPW, "restore", "latest", "--to", restored); code != 0 {
		t.Fatalf("restore with key file: exit %d: %s", code, o)
	}
	if err := sameFile(restored, ref); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.key")
	os.WriteFile(other, []byte("blockwise-key-v1 "+strings.Repeat("ab", 32)+"\n"), 0o600)
	if o, code := e.runEnv(t, []string{"BLOCKWISE_KEY_FILE=" + other}, "snapshots"); code != exitUnauthorized {
		t.Fatalf("foreign key file: exit %d: %s", code, o)
	}
	os.Chmod(other, 0o644)
	if o, _ := e.runEnv(t, []string{"BLOCKWISE_KEY_FILE=" + other}, "snapshots"); !strings.Contains(o, "accessible to other users") {
		t.Fatalf("no warning for a world-readable key file: %s", o)
	}
	os.WriteFile(other, []byte("not a key\n"), 0o600)
	if o, code := e.runEnv(t, []string{"BLOCKWISE_KEY_FILE=" + other}, "snapshots"); code != exitCorrupt || !strings.Contains(o, "key file damaged or not a blockwise key file") {
		t.Fatalf("damaged key file: exit %d: %s", code, o)
	}
	e.jsonOut(t, &keys, "--key-file", kf, "repo", "key", "list")
	if o, code := e.runEnv(t, noPW, "repo", "key", "remove", keys[0].ID); code != exitUsage || !strings.Contains(o, "only one left") {
		t.Fatalf("removing the last key: exit %d: %s", code, o)
	}
}

package main

// End-to-end tests of issue 15's backup-safety items with the real
// daemon and CLI binary: a backup after a lost pack, two backups of one
// disk at once, and a repository on a filesystem that fills up.

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
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testfs"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
)

// TestE2EBackupAfterLostPack (issue 15, item 2): a pack is deleted and
// `repair index` reports it; the next `backup` exits 0, says it re-read
// what the repository lost, and its point restores bit-identical (with
// --verify) and check --read-data passes.
// The damaged parent's restore fails before (exit 6) naming the way out,
// and succeeds after: its lost chunks were stored again.
func TestE2EBackupAfterLostPack(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 15))
	const size = 16 << 20
	e.must(t, "disk", "create", "vm", "--size", "16M")
	e.apply(t, "vm", randomWrites(rng, size, 30, 1<<20))
	first := e.backupJSON(t, "vm")
	packs, _ := filepath.Glob(filepath.Join(e.repo, "data", "*", "*"))
	if len(packs) < 3 {
		t.Fatalf("%d packs, want several", len(packs))
	}
	sort.Strings(packs)
	if err := os.Remove(packs[len(packs)/2]); err != nil {
		t.Fatal(err)
	}
	if out := e.must(t, "repair", "index"); !strings.Contains(out, "1 packs named by old index files are missing") {
		t.Fatalf("repair index after a lost pack: %s", out)
	}
	out, code := e.run(t, "restore", first.ID, "--to", filepath.Join(t.TempDir(), "old.raw"))
	if code != exitCorrupt || !strings.Contains(out, "backup --full") {
		t.Fatalf("restore of the damaged point: exit %d (want %d, naming backup --full): %s", code, exitCorrupt, out)
	}

	// The disk has not changed since: the re-read chunks are stored
	// anew under their old IDs, so the damaged parent is whole again too.
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	text, code := e.run(t, "backup", "vm")
	if code != 0 || !strings.Contains(text, "the repository had lost") {
		t.Fatalf("backup after the lost pack: exit %d: %s", code, text)
	}
	rows := e.points(t)
	last := rows[len(rows)-1].ID
	e.must(t, "restore", last, "--to", filepath.Join(t.TempDir(), "v.raw"), "--verify")
	e.restoreEquals(t, last, ref)
	e.restoreEquals(t, first.ID, ref)
	e.must(t, "check", "--read-data")
	e.must(t, "prune")

	e.apply(t, "vm", randomWrites(rng, size, 2, 128<<10))
	e.reference(t, "vm", ref)
	s := e.backupJSON(t, "vm")
	if s.Mode != "incremental" || s.Lost != 0 || s.Parent != last {
		t.Fatalf("backup after the healing one: %+v", s)
	}
	e.restoreEquals(t, s.ID, ref)
}

// started is a CLI command running in the background.
type started struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan int // exit code
}

func (e *e2e) start(t *testing.T, env []string, args ...string) *started {
	t.Helper()
	s := &started{cmd: e.command(env, args...), done: make(chan int, 1)}
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			s.done <- ee.ExitCode()
		case err != nil:
			s.done <- -1
		default:
			s.done <- 0
		}
	}()
	return s
}

func (s *started) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		return code
	case <-time.After(2 * time.Minute):
		s.cmd.Process.Kill()
		t.Fatalf("%v did not end: %s", s.cmd.Args, s.out.String())
		return -1
	}
}

// hostClient talks to the test daemon's API.
func (e *e2e) hostClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New("unix://"+filepath.Join(e.d.dir, "api.sock"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leasedBy waits until a lease on the disk names pid, or s ends.
func (e *e2e) leasedBy(t *testing.T, disk string, s *started) bool {
	t.Helper()
	c := e.hostClient(t)
	want := fmt.Sprintf("pid=%d", s.cmd.Process.Pid)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l, err := c.CurrentLease(context.Background(), disk); err == nil && strings.HasSuffix(l.Holder, want) {
			return true
		}
		select {
		case code := <-s.done:
			s.done <- code
			return false
		default:
		}
	}
	t.Fatalf("no lease by %s appeared", want)
	return false
}

// secondRepo makes another repository (cheap key derivation) and returns
// the environment that selects it.
func secondRepo(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo2")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "correct horse", repo.Options{PackSize: 256 << 10, KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return []string{"BLOCKWISE_REPO=" + dir}
}

// TestE2EConcurrentBackups (issue 15, item 6): two `blockwise backup` of
// one disk, into two repositories: whichever starts second exits 5 at
// once naming the first's process and host, in both orders, and the
// first succeeds; started together, exactly one succeeds. The points
// restore and both repositories check clean.
func TestE2EConcurrentBackups(t *testing.T) {
	e := newE2E(t, true)
	repo2 := secondRepo(t)
	rng := rand.New(rand.NewPCG(seed(t), 6))
	e.must(t, "disk", "create", "vm", "--size", "96M")
	data := make([]byte, 96<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	e.apply(t, "vm", []write{{off: 0, n: int64(len(data)), srcBytes: data}})
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	host, _ := os.Hostname()
	envs := map[string][]string{"repo1": nil, "repo2": repo2}
	for _, order := range [][2]string{{"repo1", "repo2"}, {"repo2", "repo1"}} {
		first := e.start(t, envs[order[0]], "backup", "vm", "--workers", "1", "--full")
		if !e.leasedBy(t, "vm", first) {
			t.Fatalf("%s: the first backup ended before the second could start: exit %d: %s", order, <-first.done, first.out.String())
		}
		out, code := e.runEnv(t, envs[order[1]], "backup", "vm")
		want := fmt.Sprintf("host=%s pid=%d", host, first.cmd.Process.Pid)
		if code != exitBusy || !strings.Contains(out, want) || !strings.Contains(out, "since") {
			t.Fatalf("%s: second backup beside the first: exit %d (want %d naming %q): %s", order, code, exitBusy, want, out)
		}
		if code := first.wait(t); code != 0 {
			t.Fatalf("%s: first backup: exit %d: %s", order, code, first.out.String())
		}
	}
	// Started together: one wins and the other is refused (exit 5), or,
	// when opening the repositories staggers them so much that the first
	// has released the lease before the second asks, both succeed one
	// after the other. Never anything else (before the lease: "layer
	// changed under the reader").
	a := e.start(t, nil, "backup", "vm", "--full")
	b := e.start(t, repo2, "backup", "vm", "--full")
	ca, cb := a.wait(t), b.wait(t)
	if !(ca == 0 && cb == exitBusy) && !(ca == exitBusy && cb == 0) && !(ca == 0 && cb == 0) {
		t.Fatalf("backups started together: exit %d and %d:\n%s\n%s", ca, cb, a.out.String(), b.out.String())
	}
	for _, env := range [][]string{nil, repo2} {
		var rows []backupRow
		cmd := e.command(env, "points", "--json")
		b, err := cmd.Output()
		if err != nil || json.Unmarshal(b, &rows) != nil || len(rows) == 0 {
			t.Fatalf("snapshots: %v: %s", err, b)
		}
		target := filepath.Join(t.TempDir(), "r.raw")
		if out, code := e.runEnv(t, env, "restore", rows[len(rows)-1].ID, "--to", target); code != 0 {
			t.Fatalf("restore: exit %d: %s", code, out)
		}
		if err := sameFile(target, ref); err != nil {
			t.Fatal(err)
		}
		if out, code := e.runEnv(t, env, "check", "--read-data"); code != 0 {
			t.Fatalf("check: exit %d: %s", code, out)
		}
	}
	if snaps := e.hostSnapshots(t, "vm"); len(snaps) != 0 {
		t.Fatalf("snapshots left on the host: %+v", snaps)
	}
}

// TestE2EBackupLeaseAfterKill (issue 15, item 6): a backup killed with
// SIGKILL holds its lease no longer than its holder lives on this
// machine (the next backup takes it over at once, however long its TTL),
// and a holder the CLI cannot see (another machine's) keeps the disk
// until its lease expires, then no longer.
func TestE2EBackupLeaseAfterKill(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 7))
	e.must(t, "disk", "create", "vm", "--size", "64M")
	e.apply(t, "vm", randomWrites(rng, 64<<20, 40, 4<<20))
	killed := e.start(t, nil, "backup", "vm", "--workers", "1", "--lease-ttl", "1h")
	if !e.leasedBy(t, "vm", killed) {
		t.Fatalf("the backup ended before the kill: %s", killed.out.String())
	}
	killed.cmd.Process.Signal(syscall.SIGKILL)
	killed.wait(t)
	start := time.Now()
	e.must(t, "backup", "vm")
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the backup after a kill took %v", d)
	}

	// Another machine's backup: the lease names a host that is not this one.
	c := e.hostClient(t)
	if _, err := c.AcquireLease(context.Background(), "vm", "blockwise backup host=elsewhere pid=1", 2*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	out, code := e.run(t, "backup", "vm")
	if code != exitBusy || !strings.Contains(out, "host=elsewhere pid=1") {
		t.Fatalf("backup beside another machine's: exit %d: %s", code, out)
	}
	time.Sleep(2100 * time.Millisecond)
	e.must(t, "backup", "vm")
}

// TestE2ERepositoryFull (issue 15, "also try"): a repository on a 32 MiB
// filesystem holding a point of 8 MiB, and 88 MiB more random data on the
// disk: the incremental fails cleanly (exit 1 naming the full filesystem;
// no new point, pack, temporary file, lock or snapshot left; check clean;
// the first point restores); once the filesystem has room again the next
// backup succeeds and restores.
func TestE2ERepositoryFull(t *testing.T) {
	fs := testfs.NewTmpfs(t, "32m")
	mnt := fs.Dir
	e := newE2E(t, true)
	dir := filepath.Join(mnt, "repo")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "correct horse", repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	e.repo = dir
	e.env = append(e.env, "BLOCKWISE_REPO="+dir)
	rng := rand.New(rand.NewPCG(seed(t), 9))
	e.must(t, "disk", "create", "vm", "--size", "96M")
	data := make([]byte, 96<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// A first point that fits, then more than the room left.
	e.apply(t, "vm", []write{{off: 0, n: 8 << 20, srcBytes: data[:8<<20]}})
	ref0 := filepath.Join(t.TempDir(), "ref0.raw")
	e.reference(t, "vm", ref0)
	first := e.backupJSON(t, "vm")
	packs := e.count(t, "data")
	e.apply(t, "vm", []write{{off: 8 << 20, n: int64(len(data)) - 8<<20, srcBytes: data[8<<20:]}})
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)

	out, code := e.run(t, "backup", "vm")
	t.Logf("backup into a full repository: exit %d: %s", code, out)
	if code == 0 || !strings.Contains(out, "no space left on device") {
		t.Fatalf("backup into a full repository: exit %d: %s", code, out)
	}
	if rows := e.points(t); len(rows) != 1 {
		t.Fatalf("a failed backup committed: %d points", len(rows))
	}
	if n := e.count(t, "data"); n != packs || e.count(t, "tmp") != 0 {
		t.Fatalf("the failed backup left packs or temporary files: %d packs (%d before), %d in tmp", n, packs, e.count(t, "tmp"))
	}
	if n := e.staleLocks(t); n != 0 {
		t.Fatalf("the failed backup left %d locks", n)
	}
	if snaps := e.hostSnapshots(t, "vm"); len(snaps) != 0 {
		t.Fatalf("the failed backup left snapshots %+v", snaps)
	}
	if out, code := e.run(t, "check", "--read-data"); code != 0 {
		t.Fatalf("check after the full filesystem: exit %d: %s", code, out)
	}
	e.restoreEquals(t, first.ID, ref0)
	fs.Resize("256m")
	s := e.backupJSON(t, "vm")
	if s.Mode != "incremental" || s.Parent != first.ID {
		t.Fatalf("backup after freeing space: %+v", s)
	}
	e.restoreEquals(t, s.ID, ref)
}

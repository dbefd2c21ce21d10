package main

// End-to-end: SIGKILLed backups, prunes and forgets leave nothing lost
// and no lock that blocks the next command.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

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

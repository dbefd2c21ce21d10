package main

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

// TestE2EStats: `stats --json` after a full and an incremental backup
// matches what the two disk images hold (chunk bytes of each point, and
// of the distinct chunks).
func TestE2EStats(t *testing.T) {
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 13))
	dir := t.TempDir()
	e.must(t, "disk", "create", "vm", "--size", "8M")
	var refs []string
	for g := range 2 {
		e.apply(t, "vm", randomWrites(rng, 8<<20, 6-3*g, 512<<10))
		ref := filepath.Join(dir, "ref"+string(rune('0'+g))+".raw")
		e.reference(t, "vm", ref)
		e.backupJSON(t, "vm")
		refs = append(refs, ref)
	}
	var want repoStats
	unique := map[string]bool{}
	for _, ref := range refs {
		b, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		want.Points++
		for off := 0; off < len(b); off += e2eBlock {
			c := b[off:min(off+e2eBlock, len(b))]
			if allZero(c) {
				continue
			}
			want.LogicalBytes += int64(len(c))
			if !unique[string(c)] {
				unique[string(c)] = true
				want.UniqueBytes += int64(len(c))
			}
		}
	}
	var got repoStats
	e.jsonOut(t, &got, "stats")
	if got.Points != want.Points || got.LogicalBytes != want.LogicalBytes || got.UniqueBytes != want.UniqueBytes ||
		got.StoredBytes <= 0 || got.DedupRatio < 1 {
		t.Fatalf("stats --json %+v, want %+v", got, want)
	}
}

// vmPoint creates disk "vm" of size bytes, writes n random extents into
// it, copies it to ref (unless ""), and backs it up.
func (e *e2e) vmPoint(t *testing.T, size int64, n int, stream uint64, ref string) backupSummary {
	t.Helper()
	e.must(t, "disk", "create", "vm", "--size", strconv.FormatInt(size, 10))
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), stream)), size, n, min(512<<10, size/8)))
	if ref != "" {
		e.reference(t, "vm", ref)
	}
	return e.backupJSON(t, "vm")
}

// TestE2EUnlock: a lock left by a killed process is stale and `repo
// unlock` removes it; a live holder's lock stays (prune is refused, exit 5)
// unless --remove-all.
func TestE2EUnlock(t *testing.T) {
	e := newE2E(t, true)
	id := e.vmPoint(t, 4<<20, 3, 14, "").ID
	sock := filepath.Join(t.TempDir(), "p.sock")
	_, cmd, _ := e.servePoint(t, id, "--socket", sock) // holds a shared lock
	cmd.Process.Kill()
	cmd.Wait()
	if n := e.count(t, "locks"); n != 1 {
		t.Fatalf("%d lock files after a killed holder, want 1", n)
	}
	if out := e.must(t, "repo", "unlock"); !strings.Contains(out, "removed 1 lock") || e.count(t, "locks") != 0 {
		t.Fatalf("repo unlock of a dead holder's lock: %s", out)
	}
	_, cmd, _ = e.servePoint(t, id, "--socket", sock)
	if out, code := e.run(t, "prune"); code != exitBusy {
		t.Fatalf("prune beside a live shared lock: exit %d: %s", code, out)
	}
	if out := e.must(t, "repo", "unlock"); !strings.Contains(out, "removed 0 lock") {
		t.Fatalf("repo unlock removed a live lock: %s", out)
	}
	if out := e.must(t, "repo", "unlock", "--remove-all"); !strings.Contains(out, "removed 1 lock") {
		t.Fatalf("repo unlock --remove-all beside a live holder: %s", out)
	}
	e.must(t, "prune") // the holder refreshes its lock only every few minutes
	cmd.Process.Kill()
	cmd.Wait()
}

// TestE2ERestoreToDisk: restore --to-disk creates a disk on the host and
// writes the point into it over NBD, --verify reads it back, and the new
// disk reads as the point; an existing disk is never overwritten. backup
// --full reads every allocated area again despite a usable parent.
func TestE2ERestoreToDisk(t *testing.T) {
	e := newE2E(t, true)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	s := e.vmPoint(t, 8<<20, 6, 15, ref)
	out := e.must(t, "restore", s.ID, "--to-disk", "vm-restored", "--verify")
	if !strings.Contains(out, "read back") {
		t.Fatalf("restore --verify does not say it read the disk back: %s", out)
	}
	got := filepath.Join(dir, "got.raw")
	e.reference(t, "vm-restored", got)
	if err := sameFile(got, ref); err != nil {
		t.Fatalf("restored disk: %v", err)
	}
	if out, code := e.run(t, "restore", s.ID, "--to-disk", "vm-restored"); code != exitBusy {
		t.Fatalf("restore onto an existing disk: exit %d: %s", code, out)
	}
	var f backupSummary
	e.jsonOut(t, &f, "backup", "vm", "--full")
	if f.Mode != "full" || !strings.Contains(f.Reason, "requested") || f.Read < s.Read || f.NewBytes != 0 {
		t.Fatalf("backup --full after %+v: %+v", s, f)
	}
}

// TestE2ELockWait: prune --lock-wait waits out a shared lock (here a
// serve-point's) instead of failing, and runs once it is released.
func TestE2ELockWait(t *testing.T) {
	e := newE2E(t, true)
	id := e.vmPoint(t, 4<<20, 3, 16, "").ID
	_, holder, _ := e.servePoint(t, id, "--socket", filepath.Join(t.TempDir(), "p.sock"))
	prune := e.command(nil, "prune", "--lock-wait", "30s")
	var out bytes.Buffer
	prune.Stdout, prune.Stderr = &out, &out
	if err := prune.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- prune.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("prune did not wait for the shared lock: %v: %s", err, out.String())
	case <-time.After(time.Second):
	}
	holder.Process.Signal(syscall.SIGTERM)
	holder.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("prune after the lock was released: %v: %s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		prune.Process.Kill()
		t.Fatalf("prune still waiting 20 s after the lock was released: %s", out.String())
	}
}

// TestE2EDemo runs the README's main job, `blockwise demo`, on a fresh
// datastore: it must start its own host, back up twice (full, then a CBT
// incremental that reads about what changed), prove both points against
// the host's hash tree and restore identically (to the point's root).
func TestE2EDemo(t *testing.T) {
	needTools(t, "qemu-img")
	dir, err := os.MkdirTemp("", "bwdemo") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := cliCommand(dir, nil, "demo")
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("demo: %v: %s", err, out)
	}
	for _, want := range []string{"full (first backup", "incremental", "identical to the disk", "the disk is identical to the point",
		"hashes to the point's root"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "equals the host's root"); n != 2 {
		t.Fatalf("demo proved %d of its 2 points:\n%s", n, out)
	}
}

func TestChangedCell(t *testing.T) {
	for _, tc := range []struct {
		row  backupRow
		want string
	}{
		{backupRow{Changed: 64 << 10, Read: 64 << 10}, human(64 << 10)},
		{backupRow{}, human(0)},         // an incremental with nothing changed
		{backupRow{Read: 1 << 20}, "-"}, // written before changed bytes were recorded
	} {
		if got := changedCell(tc.row); got != tc.want {
			t.Errorf("changedCell(%+v) = %q, want %q", tc.row, got, tc.want)
		}
	}
}

// TestE2ERepairIndex: of two index files one is lost and one damaged.
// Commands that need the index refuse the repository (exit 6), check
// lists the damage and points at repair index (exit 8), prune refuses and
// removes nothing; repair index rebuilds the index from the packs, after
// which check --read-data is clean (checked after the test), both points
// restore and prune runs.
func TestE2ERepairIndex(t *testing.T) {
	e := newE2E(t, true)
	ref1, ref2 := filepath.Join(t.TempDir(), "ref1.raw"), filepath.Join(t.TempDir(), "ref2.raw")
	id1 := e.vmPoint(t, 8<<20, 6, 21, ref1).ID
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), 22)), 8<<20, 4, 256<<10))
	e.reference(t, "vm", ref2)
	id2 := e.backupJSON(t, "vm").ID
	var files []string
	filepath.WalkDir(filepath.Join(e.repo, "index"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if len(files) < 2 {
		t.Fatalf("%d index files, want two or more", len(files))
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(files[1], data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := e.run(t, "points"); code != exitCorrupt {
		t.Fatalf("snapshots with a damaged index file: exit %d: %s", code, out)
	}
	out, code := e.run(t, "check")
	if code != exitCheckFailed || !strings.Contains(out, "repair index") {
		t.Fatalf("check with index files lost and damaged: exit %d: %s", code, out)
	}
	t.Logf("check: %s", out)
	packs := e.count(t, "data")
	if out, code = e.run(t, "prune"); code != exitCorrupt || e.count(t, "data") != packs || !strings.Contains(out, "repair index") {
		t.Fatalf("prune with index files lost and damaged: exit %d, %d of %d packs left: %s", code, e.count(t, "data"), packs, out)
	}
	t.Logf("prune: %s", out)
	var rep repo.RepairIndexResult
	e.jsonOut(t, &rep, "repair", "index")
	if rep.Packs != packs || rep.PacksRead != packs || len(rep.BadIndexFiles) != 1 || len(rep.Damaged) != 0 {
		t.Fatalf("repair index: %+v, %d packs", rep, packs)
	}
	e.restoreEquals(t, id1, ref1)
	e.restoreEquals(t, id2, ref2)
	e.must(t, "prune")
	e.restoreEquals(t, id2, ref2)
}

// TestE2EThrottle: --limit-upload holds a backup's packs to the rate and
// --limit-download a restore's reads (only lower bounds on time are
// asserted); a negative limit is a usage error.
func TestE2EThrottle(t *testing.T) {
	e := newE2E(t, true)
	const kib = 4096 // KiB/s
	e.must(t, "disk", "create", "vm", "--size", "8M")
	data := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(seed(t), 23))
	for i := range data { // incompressible
		data[i] = byte(rng.Uint32())
	}
	e.apply(t, "vm", []write{{off: 1 << 20, n: int64(len(data)), srcBytes: data}})
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	minFor := func(bytes uint64) time.Duration { // all but one 256 KiB burst at the rate
		return time.Duration(float64(bytes-256<<10) / (kib << 10) * float64(time.Second))
	}
	var s backupSummary
	e.jsonOut(t, &s, "backup", "vm", "--limit-upload", strconv.Itoa(kib))
	if took := time.Duration(s.Seconds * float64(time.Second)); took < minFor(s.Stored) {
		t.Fatalf("backup storing %d bytes at %d KiB/s took %v, want at least %v", s.Stored, kib, took, minFor(s.Stored))
	}
	out := filepath.Join(t.TempDir(), "out.raw")
	start := time.Now()
	e.must(t, "restore", s.ID, "--to", out, "--limit-download", strconv.Itoa(kib))
	if took := time.Since(start); took < minFor(uint64(len(data))) {
		t.Fatalf("restore reading %d bytes at %d KiB/s took %v", len(data), kib, took)
	}
	if err := sameFile(out, ref); err != nil {
		t.Fatal(err)
	}
	if out, code := e.run(t, "points", "--limit-upload", "-1"); code != exitUsage {
		t.Fatalf("--limit-upload -1: exit %d: %s", code, out)
	}
}

// TestE2EPruneDryRun: prune -n says what prune then removes, to the pack,
// and removes nothing itself.
func TestE2EPruneDryRun(t *testing.T) {
	e := newE2E(t, true)
	first := e.vmPoint(t, 8<<20, 6, 25, "").ID
	e.must(t, "disk", "create", "w", "--size", "4M")
	e.apply(t, "w", randomWrites(rand.New(rand.NewPCG(seed(t), 26)), 4<<20, 4, 512<<10))
	e.backupJSON(t, "w")
	e.must(t, "forget", first) // all of its packs die
	// A file that is no pack (someone's notes) is warned about, not removed.
	stray := filepath.Join(e.repo, "data", "not-a-pack")
	if err := os.WriteFile(stray, []byte("notes"), 0o600); err != nil {
		t.Fatal(err)
	}
	packs := e.count(t, "data")
	var dry, st repo.PruneStats
	e.jsonOut(t, &dry, "prune", "--dry-run")
	if !dry.DryRun || dry.PacksRemoved == 0 || e.count(t, "data") != packs {
		t.Fatalf("prune --dry-run: %+v, %d of %d packs left", dry, e.count(t, "data"), packs)
	}
	if out := e.must(t, "prune", "-n"); !strings.Contains(out, "would remove") || !strings.Contains(out, `warning: stray data file "not-a-pack"`) {
		t.Fatalf("prune -n: %s", out)
	}
	e.jsonOut(t, &st, "prune")
	if st.DryRun || st.PacksRemoved != dry.PacksRemoved || st.PacksRepacked != dry.PacksRepacked {
		t.Fatalf("prune after the dry run %+v: %+v", dry, st)
	}
	if left := e.count(t, "data"); st.PacksRepacked == 0 && left != packs-st.PacksRemoved {
		t.Fatalf("%d packs left of %d after removing %d", left, packs, st.PacksRemoved)
	}
	if len(st.Warnings) != 1 {
		t.Errorf("prune --json warnings %q, want the stray file's", st.Warnings)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatalf("prune removed a file that is no pack: %v", err)
	}
}

// TestE2ERollback: restore --rollback returns a disk changed by qemu-io
// to its restore point bit for bit (compared with qemu-img's copy taken
// at backup time), writing only what CBT says changed; another disk is
// refused (exit 2), as is --rollback with another target (exit 2).
func TestE2ERollback(t *testing.T) {
	e := newE2E(t, true)
	ref := filepath.Join(t.TempDir(), "ref.raw")
	id := e.vmPoint(t, 8<<20, 6, 27, ref).ID
	blocks, _ := e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), 28)), 8<<20, 5, 256<<10))
	out := e.must(t, "restore", id, "--rollback", "vm", "--verify")
	if !strings.Contains(out, "rolled vm back") || !strings.Contains(out, "root equals the point's") {
		t.Fatalf("restore --rollback (its root checked by the host's tree): %s", out)
	}
	// Chunks and CBT blocks are both 64 KiB: exactly the touched blocks
	// are reported and written back.
	m := regexp.MustCompile(`reported (\d+) bytes changed since; (\d+) bytes written, (\d+) zero chunks`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("restore --rollback: %s", out)
	}
	changed, _ := strconv.ParseInt(m[1], 10, 64)
	written, _ := strconv.ParseInt(m[2], 10, 64)
	zeros, _ := strconv.ParseInt(m[3], 10, 64)
	if changed != blocks*e2eBlock || written+zeros*e2eBlock != changed {
		t.Fatalf("rollback of %d touched blocks: %s", blocks, out)
	}
	now := filepath.Join(t.TempDir(), "now.raw")
	e.reference(t, "vm", now)
	if err := sameFile(now, ref); err != nil {
		t.Fatalf("disk after rollback: %v", err)
	}
	e.must(t, "disk", "create", "w", "--size", "8M")
	if out, code := e.run(t, "restore", id, "--rollback", "w"); code != exitUsage {
		t.Fatalf("rollback of another disk: exit %d: %s", code, out)
	}
	if out, code := e.run(t, "restore", id, "--rollback", "vm", "--to", now+".2"); code != exitUsage {
		t.Fatalf("--rollback with --to: exit %d: %s", code, out)
	}
	if s := e.backupJSON(t, "vm"); s.Mode != "incremental" {
		t.Fatalf("backup after the rollback: %+v", s)
	}
}

// TestE2ERollbackKilled: rollbacks SIGKILLed at random moments leave the
// disk part way; the next rollback still returns it to the point bit for
// bit (CBT then covers the partial writes too), and leaves no snapshot.
func TestE2ERollbackKilled(t *testing.T) {
	e := newE2E(t, true)
	ref := filepath.Join(t.TempDir(), "ref.raw")
	id := e.vmPoint(t, 16<<20, 8, 29, ref).ID
	rng := rand.New(rand.NewPCG(seed(t), 30))
	e.apply(t, "vm", randomWrites(rng, 16<<20, 30, 1<<20))
	dur, killed := 300*time.Millisecond, 0
	for range 4 {
		start := time.Now()
		completed, out := e.killAfter(t, time.Duration(rng.Int64N(int64(dur))), "restore", id, "--rollback", "vm")
		if completed {
			dur = time.Since(start)
			t.Logf("completed: %s", strings.TrimSpace(out))
		} else {
			killed++
		}
		e.apply(t, "vm", randomWrites(rng, 16<<20, 10, 1<<20)) // the disk moves on
	}
	e.must(t, "restore", id, "--rollback", "vm", "--verify")
	now := filepath.Join(t.TempDir(), "now.raw")
	e.reference(t, "vm", now)
	if err := sameFile(now, ref); err != nil {
		t.Fatalf("disk after %d killed rollbacks and a whole one: %v", killed, err)
	}
	if snaps := e.hostSnapshots(t, "vm"); len(snaps) != 0 {
		t.Fatalf("snapshots left: %+v", snaps)
	}
	t.Logf("%d of 4 rollbacks killed", killed)
}

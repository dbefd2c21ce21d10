package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			if bytes.Count(c, []byte{0}) == len(c) {
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

// TestE2EUnlock: a lock left by a killed process is stale and `repo
// unlock` removes it; a live holder's lock stays (prune is refused, exit 5)
// unless --remove-all.
func TestE2EUnlock(t *testing.T) {
	e := newE2E(t, true)
	e.must(t, "disk", "create", "vm", "--size", "4M")
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), 14)), 4<<20, 3, 256<<10))
	id := e.backupJSON(t, "vm").ID
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

package main

// End-to-end tests of issue 15's backup-safety items with the real
// daemon and CLI binary: a backup after a lost pack, two backups of one
// disk at once, and a repository on a filesystem that fills up.

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
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

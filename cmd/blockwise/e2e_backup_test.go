package main

// End-to-end tests of issue 5 (backup, restore, forget/prune, crashes,
// corruption, operator errors) with the real daemon, the real CLI binary
// built by TestMain, and the real NBD clients qemu-io and qemu-img; the
// helpers are in e2e_helpers_test.go, one file per behaviour.

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

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
		checkPointRoot(t, s, ref)
		gens = append(gens, gen{s.ID, ref})
		// What the catalogue says must match what the backup said.
		rows := e.points(t)
		if len(rows) != g+1 || rows[g].ID != s.ID || int64(rows[g].Read) != s.Read || rows[g].NewBytes != s.NewBytes ||
			int64(rows[g].Changed) != s.Changed || s.Changed == 0 {
			t.Fatalf("gen %d: points --json %+v, backup said %+v", g, rows, s)
		}
		if rows[g].Root != s.Root {
			t.Fatalf("gen %d: points says root %q, backup said %q", g, rows[g].Root, s.Root)
		}
		if g > 0 && rows[g].Read > uint64(blocks*e2eBlock*3/2) {
			t.Fatalf("gen %d: points reports %d bytes read for an incremental touching %d blocks", g, rows[g].Read, blocks)
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

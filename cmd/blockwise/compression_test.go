package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/repo"
)

// TestCLICompression: --compression picks the codec per command, as
// restic's does. A repository made with lz4 as its default stores a
// compressible disk smaller than `backup --compression off` does, both
// points restore byte for byte (and check --read-data runs at the end),
// and an unknown setting is a usage error that writes nothing.
func TestCLICompression(t *testing.T) {
	e := newE2EOpts(t, &repo.Options{PackSize: 256 << 10, Compression: repo.CompressionLZ4})
	e.must(t, "disk", "create", "vm", "--size", "8M")
	// Log-like text: compressible, and no two chunks alike (no dedup).
	e.apply(t, "vm", []write{{off: 0, n: 6 << 20, srcBytes: logText(1, 6<<20)}})
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm", ref)
	var withDefault, withOff backupSummary
	e.jsonOut(t, &withDefault, "backup", "vm")
	// A second repository default cannot be set after Init; the flag can
	// still choose per run. Force a full read so the same data is stored
	// again under another codec: a new disk with the same content.
	e.must(t, "disk", "create", "vm2", "--size", "8M")
	e.apply(t, "vm2", []write{{off: 0, n: 6 << 20, srcBytes: logText(2, 6<<20)}})
	ref2 := filepath.Join(t.TempDir(), "ref2.raw")
	e.reference(t, "vm2", ref2)
	e.jsonOut(t, &withOff, "backup", "vm2", "--compression", "off")
	if withDefault.Stored == 0 || withOff.Stored < 2*withDefault.Stored {
		t.Errorf("stored bytes with lz4 %d, with --compression off %d: want off ≥ 2× lz4", withDefault.Stored, withOff.Stored)
	}
	e.restoreEquals(t, withDefault.ID, ref)
	e.restoreEquals(t, withOff.ID, ref2)
	if out := e.must(t, "repo", "info"); !strings.Contains(out, "compression lz4") {
		t.Errorf("repo info does not show the repository's default lz4:\n%s", out)
	}
	before := len(e.points(t))
	if out, code := e.run(t, "backup", "vm", "--compression", "brotli"); code != exitUsage || !strings.Contains(out, "auto, max, lz4 or off") {
		t.Fatalf("--compression brotli: exit %d: %s", code, out)
	}
	if after := len(e.points(t)); after != before {
		t.Fatalf("a refused backup left %d points, want %d", after, before)
	}
}

// TestCLIRepoInitCompression: `repo init --compression max` records the
// repository's default, and an unknown one creates nothing.
func TestCLIRepoInitCompression(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	pw := []string{"BLOCKWISE_PASSWORD=x"}
	if out, code := runRepoCLI(t, dir, pw, "repo", "init", "--compression", "zip"); code != exitUsage {
		t.Fatalf("init --compression zip: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, dir, pw, "repo", "init", "--compression", "max"); code != 0 {
		t.Fatalf("init --compression max: exit %d: %s", code, out)
	}
	if out, code := runRepoCLI(t, dir, pw, "repo", "info"); code != 0 || !strings.Contains(out, "compression max") {
		t.Fatalf("repo info: exit %d: %s", code, out)
	}
}

// logText is n bytes of numbered log lines, different for every seed.
func logText(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 9))
	levels := []string{"info", "warn", "error", "debug"}
	var b []byte
	for len(b) < n {
		b = fmt.Appendf(b, "2026-12-04T17:%02d:%02d %s disk=vm%d block=%d changed\n",
			rng.IntN(60), rng.IntN(60), levels[rng.IntN(4)], rng.IntN(50), rng.Uint64N(1<<30))
	}
	return b[:n]
}

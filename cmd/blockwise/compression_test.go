package main

import (
	"encoding/json"
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

// TestCLIBackupParallel: `backup --parallel 3` of four disks into one
// repository makes four points, each restoring byte for byte, a second
// run of it four incrementals, and check --read-data (at the end) is clean.
func TestCLIBackupParallel(t *testing.T) {
	e := newE2E(t, true)
	disks := []string{"p0", "p1", "p2", "p3"}
	refs := map[string]string{}
	for i, d := range disks {
		e.must(t, "disk", "create", d, "--size", "8M")
		e.apply(t, d, []write{{off: int64(i) << 20, n: 3 << 20, srcBytes: logText(uint64(10+i), 3<<20)}})
		refs[d] = filepath.Join(t.TempDir(), d+".raw")
		e.reference(t, d, refs[d])
	}
	for round, mode := range []string{"full", "incremental"} {
		out := e.must(t, append([]string{"backup", "--parallel", "3", "--json"}, disks...)...)
		dec := json.NewDecoder(strings.NewReader(out))
		seen := map[string]bool{}
		for dec.More() {
			var s backupSummary
			if err := dec.Decode(&s); err != nil {
				t.Fatalf("round %d: %v in %s", round, err, out)
			}
			if s.Mode != mode {
				t.Errorf("round %d: %s backed up %s, want %s", round, s.Disk, s.Mode, mode)
			}
			seen[s.Disk] = true
			if round == 0 {
				e.restoreEquals(t, s.ID, refs[s.Disk])
			}
		}
		if len(seen) != len(disks) {
			t.Fatalf("round %d: summaries for %v, want %v", round, seen, disks)
		}
	}
}

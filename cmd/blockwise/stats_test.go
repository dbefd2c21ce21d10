package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
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

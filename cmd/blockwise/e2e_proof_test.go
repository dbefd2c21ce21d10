package main

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// checkPointRoot: a backup's point has the root of the image it was
// taken of (ref, the disk read whole after the writes), computed here
// independently; proven when the host keeps a tree.
func checkPointRoot(t *testing.T, s backupSummary, ref string) {
	t.Helper()
	f, err := os.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := hashtree.Build(context.Background(), f, st.Size(), e2eBlock, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := tr.Root()
	if s.Root != hex.EncodeToString(want[:]) {
		t.Fatalf("point %s: root %q (%s), the image's is %x", s.ID[:12], s.Root, s.RootNote, want)
	}
	t.Logf("point %s: root %s proven %v %s", s.ID[:12], s.Root[:16], s.RootProven, s.RootNote)
	if !s.RootProven {
		t.Fatalf("point %s: root not proven: %s", s.ID[:12], s.RootNote)
	}
}

// TestE2EProofTamperedTree: through the CLI, `check --read-data` fails
// (exit 8) on a point whose tree, consistent with its own root, is not
// the hash of its data, naming the leaf; `restore --verify` checks the
// good point's root; `points` shows roots.
func TestE2EProofTamperedTree(t *testing.T) {
	e := newE2E(t, true)
	e.must(t, "disk", "create", "vm", "--size", "8M")
	e.apply(t, "vm", []write{{cmd: "write -q -P 7 0 1M", off: 0, n: 1 << 20}})
	s := e.backupJSON(t, "vm")
	if s.Root == "" {
		t.Fatalf("backup without a root: %s", s.RootNote)
	}
	out := e.must(t, "restore", s.ID, "--to", filepath.Join(t.TempDir(), "r.raw"), "--verify")
	if !strings.Contains(out, "the image's root equals the point's") {
		t.Fatalf("restore --verify: %s", out)
	}
	if out := e.must(t, "points"); !strings.Contains(out, "ROOT") || !strings.Contains(out, s.Root[:12]) {
		t.Fatalf("points: %s", out)
	}
	bad := tamperedPoint(t, e.repo, s.ID)
	out, code := e.run(t, "check", "--read-data")
	if code != exitCheckFailed || !strings.Contains(out, "leaf 2 (offset 131072)") {
		t.Fatalf("check --read-data of a tampered tree: exit %d: %s", code, out)
	}
	e.must(t, "forget", bad)
}

// tamperedPoint writes a point equal to id but for one leaf of its tree
// (its root recomputed to match), as only the key holder could.
func tamperedPoint(t *testing.T, dir, id string) string {
	t.Helper()
	ctx := context.Background()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mid, err := repo.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.LoadManifest(ctx, mid)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := r.LoadTree(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Set(2, hashtree.LeafHash([]byte("not the data"), tr.BlockSize())); err != nil {
		t.Fatal(err)
	}
	w, err := r.NewWriter(ctx, m, m.Meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetTree(repo.FullTree{Tree: tr}, true); err != nil {
		t.Fatal(err)
	}
	bad, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return bad.ID.String()
}

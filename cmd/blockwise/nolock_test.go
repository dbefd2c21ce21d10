package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testfs"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
)

// pointRepo makes a repository at dir with cheap key derivation and one
// restore point of img, returning the point's ID.
func pointRepo(t *testing.T, dir, password string, img []byte) string {
	t.Helper()
	ctx := context.Background()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, password, repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := r.NewWriter(ctx, nil, repo.Meta{Disk: "vm", Size: uint64(len(img)), Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(img); off += e2eBlock {
		if err := w.PutChunk(ctx, uint64(off/e2eBlock), img[off:off+e2eBlock]); err != nil {
			t.Fatal(err)
		}
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m.ID.String()
}

// TestNoLockCLI: on a read-only repository (a read-only bind mount),
// restore and check --read-data fail for want of a lock, with exit 1 and
// a message naming --no-lock; with --no-lock they (and stats, snapshots,
// repo info) work and the restore is byte-identical. Commands that write
// refuse --no-lock with exit 2 before doing anything.
func TestNoLockCLI(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	img := make([]byte, 2<<20)
	rng := rand.New(rand.NewPCG(seed(t), 21))
	for i := range img[:1<<20] {
		img[i] = byte(rng.Uint32())
	}
	id := pointRepo(t, repoDir, "ro pw", img)
	ro := testfs.ReadOnly(t, repoDir)
	pw := []string{"BLOCKWISE_PASSWORD=ro pw"}
	out := filepath.Join(dir, "out.raw")
	for _, args := range [][]string{{"restore", id, "--to", out}, {"check", "--read-data"}, {"repo", "check", "--read-data"}, {"stats"}} {
		got, code := runRepoCLI(t, ro, pw, args...)
		if code != exitFailure || !strings.Contains(got, "read-only") || !strings.Contains(got, "--no-lock") {
			t.Errorf("%v on a read-only repository: exit %d, want %d naming --no-lock: %s", args, code, exitFailure, got)
		}
	}
	os.Remove(out)
	for _, args := range [][]string{{"restore", id, "--to", out}, {"check", "--read-data"}, {"repo", "check", "--read-data"}, {"stats"}, {"points"}, {"repo", "info"}, {"repo", "key", "list"}} {
		if got, code := runRepoCLI(t, ro, pw, append(args, "--no-lock")...); code != 0 {
			t.Errorf("%v --no-lock: exit %d: %s", args, code, got)
		}
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, img) {
		t.Errorf("restore --no-lock: %v, equal %v", err, bytes.Equal(b, img))
	}
	for _, args := range [][]string{{"backup", "vm"}, {"forget", id}, {"prune"}, {"prune", "--dry-run"}, {"repair", "index"}, {"repo", "unlock"}, {"repo", "key", "remove", "x"}, {"repo", "init"}} {
		got, code := runRepoCLI(t, repoDir, pw, append(args, "--no-lock")...)
		if code != exitUsage || !strings.Contains(got, "--no-lock is only for commands that only read") {
			t.Errorf("%v --no-lock: exit %d, want %d: %s", args, code, exitUsage, got)
		}
	}
	if got, code := runRepoCLI(t, repoDir, pw, "check", "--read-data"); code != 0 {
		t.Errorf("check of the writable repository afterwards: exit %d: %s", code, got)
	}
}

package local_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

func TestConformance(t *testing.T) {
	backendtest.RunTests(t, func(t *testing.T) backend.Backend {
		be, err := local.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return be
	})
}

func TestFanOutAndTmpCleanup(t *testing.T) {
	dir := t.TempDir()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), backend.Handle{Type: backend.Data, Name: "abcd"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "ab", "abcd")); err != nil {
		t.Fatalf("no fan-out: %v", err)
	}
	// A crashed writer's old temp file is cleaned at open; a fresh one may
	// belong to a backup running in another process and must stay.
	old, fresh := filepath.Join(dir, "tmp", "save-123"), filepath.Join(dir, "tmp", "save-456")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	os.Chtimes(old, past, past)
	if _, err := local.Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err == nil {
		t.Fatal("stale temp file not cleaned")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("a fresh temp file (another process's save in flight) was removed")
	}
}

// TestSaveSurvivesPowerLoss: what Save and Open returned for survives a
// power cut (docs/repository.md, invariant R2). Without syncing the
// fan-out directory data/xx/ into data/ (and the type directories into
// the root) a pack vanished with its directory though its data and its
// name in data/xx/ were synced.
func TestSaveSurvivesPowerLoss(t *testing.T) {
	fsys := vfstest.NewCrashFS()
	be, err := local.Open("/repo", local.WithFS(fsys))
	if err != nil {
		t.Fatal(err)
	}
	saved := []backend.Handle{{Type: backend.Data, Name: "abcd"}, {Type: backend.Index, Name: "ef01"}, {Type: backend.Config, Name: "config"}}
	for _, h := range saved {
		if err := be.Save(t.Context(), h, []byte("x"+h.Name)); err != nil {
			t.Fatal(err)
		}
	}
	after := fsys.Crash()
	be, err = local.Open("/repo", local.WithFS(after))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range saved {
		rd, err := be.Load(t.Context(), h, 0, 0)
		if err != nil {
			t.Fatalf("%v lost in the power cut: %v", h, err)
		}
		got, _ := io.ReadAll(rd)
		rd.Close()
		if string(got) != "x"+h.Name {
			t.Fatalf("%v reads %q", h, got)
		}
	}
	if ents, _ := after.ReadDir("/repo/tmp"); len(ents) != 0 {
		t.Fatalf("temporary files left after saves that returned: %v", ents)
	}
}

// TestConformanceOnVFS runs the contract on a CrashFS: the backend only
// uses the file system through the vfs seam.
func TestConformanceOnVFS(t *testing.T) {
	backendtest.RunTests(t, func(t *testing.T) backend.Backend {
		be, err := local.Open("/repo", local.WithFS(vfstest.NewCrashFS()))
		if err != nil {
			t.Fatal(err)
		}
		return be
	})
}

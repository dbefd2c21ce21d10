package local_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/local"
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

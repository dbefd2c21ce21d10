package local_test

import (
	"os"
	"path/filepath"
	"testing"

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
	// A crashed writer's temp file must be cleaned at open and never listed.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "save-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(dir); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp not cleaned: %v", ents)
	}
}

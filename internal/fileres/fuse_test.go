package fileres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/dev/fuse missing")
		}
		t.Skip("/dev/fuse missing")
	}
}

func TestMount(t *testing.T) {
	needFUSE(t)
	d := buildDisk(t)
	p := openTestPoint(t, d.Img)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- p.Mount(ctx, dir, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	func() {
		defer cancel()
		imagetest.CompareTree(t, d.Tree, filepath.Join(dir, "part1"), imagetest.CompareOptions{TimeStep: 1e9})
		imagetest.CompareTree(t, d.Tree, filepath.Join(dir, "part3/bwtest-root"), imagetest.CompareOptions{TimeStep: 1e9})
		imagetest.CompareTree(t, d.FATTree, filepath.Join(dir, "part2"), imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9})
		if err := os.WriteFile(filepath.Join(dir, "part1/etc/new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write into the mount: %v, want EROFS", err)
		}
		if _, err := os.ReadDir(filepath.Join(dir, "part4")); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("list xfs: %v, want EOPNOTSUPP", err)
		}
		// The mount point is in use now.
		if err := p.Mount(context.Background(), dir, nil); !errors.Is(err, ErrMountBusy) {
			t.Errorf("second mount: %v, want ErrMountBusy", err)
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("still mounted after cancel: %v", ents)
	}
}

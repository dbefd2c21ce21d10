package fileres

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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
	go func() { done <- p.Mount(ctx, dir, MountOptions{Ready: func() { close(ready) }}) }()
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
			t.Errorf("list swap: %v, want EOPNOTSUPP", err)
		}
		// The mount point is in use now.
		if err := p.Mount(context.Background(), dir, MountOptions{}); !errors.Is(err, ErrMountBusy) {
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

// A chunk that fails verification after the mount is up fails the read
// of its file with EIO, and the log names the cause.
func TestMountDamagedChunk(t *testing.T) {
	needFUSE(t)
	img := fuzzBase(t)
	r, _, dir := testImage(t, img)
	ms, err := r.ListManifests(context.Background())
	if err != nil || len(ms) != 1 {
		t.Fatal(ms, err)
	}
	// A cache of a few chunks: the file's data is read again after the
	// damage, not served from memory.
	s, err := OpenRepoPoint(context.Background(), r, ms[0].ID, SourceOptions{CacheBytes: 1, ReadAhead: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	damagePacks(t, dir)
	mnt := t.TempDir()
	var log bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.Mount(ctx, mnt, MountOptions{Ready: func() { close(ready) }, Log: slog.New(slog.NewTextHandler(&log, nil))})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	// Read everything: the few chunks still cached read fine, the rest
	// fail verification.
	eio := 0
	filepath.WalkDir(mnt, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			_, err = os.ReadFile(p)
		}
		if errors.Is(err, syscall.EIO) {
			eio++
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if eio == 0 {
		t.Fatal("no read through the damaged chunks failed with EIO")
	}
	if !strings.Contains(log.String(), "corrupt") {
		t.Fatalf("log does not name the damage: %s", log.String())
	}
}

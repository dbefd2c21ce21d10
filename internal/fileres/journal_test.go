package fileres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// A crash-consistent copy of a mounted ext4 (what a backup of a running
// guest holds): files made and fsynced are in the journal, not yet at
// their homes. The reader replays the journal as mount would, and the
// tree equals the one the kernel shows after e2fsck's recovery of the
// same copy; without the replay (needs_recovery cleared) the new
// directory is missing, so the test does exercise the journal.
func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	snap := crashConsistentExt4(t, dir)

	// The kernel's answer: e2fsck replays the journal of a copy.
	recovered := filepath.Join(dir, "recovered")
	imagetest.Run(t, nil, "cp", "--sparse=always", snap, recovered)
	imagetest.RunCodes(t, []int{0, 1}, "e2fsck", "-fy", recovered)
	want := filepath.Join(dir, "want")
	os.Mkdir(want, 0o755)
	imagetest.Run(t, nil, "mount", "-o", "ro,loop", recovered, want)
	defer imagetest.Run(t, nil, "umount", want)

	p := openTestPoint(t, snap)
	if d := p.Volumes[0].Desc; !strings.Contains(d, "journal replayed") {
		t.Fatalf("volume: %s", d)
	}
	out := t.TempDir()
	if _, err := p.Restore(context.Background(), []string{"/disk"}, out); err != nil {
		t.Fatal(err)
	}
	imagetest.CompareTree(t, want, filepath.Join(out, "disk"), imagetest.CompareOptions{})

	stale := filepath.Join(dir, "stale")
	imagetest.Run(t, nil, "cp", "--sparse=always", snap, stale)
	imagetest.Run(t, nil, "debugfs", "-w", "-R", "feature -needs_recovery", stale)
	if _, err := openTestPoint(t, stale).Lookup(context.Background(), "/disk/newdir"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("without the journal the new directory is there too (%v): the test does not test the replay", err)
	}
}

// crashConsistentExt4 makes an ext4 image in dir, mounts it, makes and
// fsyncs files, and copies the image while it is still mounted: the
// copy's journal holds what its homes do not yet. It returns the copy.
func crashConsistentExt4(t testing.TB, dir string) string {
	t.Helper()
	imagetest.NeedTools(t, "mkfs.ext4", "mount", "umount", "xfs_io", "e2fsck", "debugfs")
	src, mnt, img := filepath.Join(dir, "src"), filepath.Join(dir, "m"), filepath.Join(dir, "img")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc/hosts"), []byte("old\n"), 0o644)
	os.Mkdir(mnt, 0o755)
	imagetest.Ext(t, "ext4", src, img, 24)
	imagetest.Run(t, nil, "mount", "-o", "loop", img, mnt)
	mounted := true
	defer func() {
		if mounted {
			imagetest.Run(t, nil, "umount", mnt)
		}
	}()
	os.Mkdir(filepath.Join(mnt, "newdir"), 0o750)
	for i := range 20 {
		imagetest.Run(t, nil, "xfs_io", "-f", "-c", "pwrite -q -S 0x61 0 5000", "-c", "fsync", filepath.Join(mnt, "newdir", "f"+strings.Repeat("x", i)))
	}
	imagetest.Run(t, nil, "xfs_io", "-c", "pwrite -q -S 0x62 0 3", "-c", "fsync", filepath.Join(mnt, "etc/hosts"))
	snap := filepath.Join(dir, "snap")
	imagetest.Run(t, nil, "cp", "--sparse=always", img, snap) // the backup's view: the guest still running
	imagetest.Run(t, nil, "umount", mnt)
	mounted = false

	return snap
}

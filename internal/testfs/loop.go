package testfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Loop is a real file system (XFS, ext4, ...) made on a sparse image
// file and mounted through a loop device, unmounted when its test ends.
type Loop struct {
	Dir   string
	Image string
}

// NewLoop makes a file system of type fstype (mkfs.FSTYPE with mkfsArgs,
// e.g. "-m", "reflink=1" for XFS with reflink) on a sparse image of size
// bytes and mounts it at a new short directory. Without root, or without
// the mkfs tool when CI is unset, the test is skipped; under CI=true a
// missing tool fails it.
func NewLoop(t testing.TB, fstype string, size int64, mkfsArgs ...string) *Loop {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop file system needs root")
	}
	mkfs := "mkfs." + fstype
	if _, err := exec.LookPath(mkfs); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (scripts/setup.sh installs it)", mkfs)
		}
		t.Skipf("%s not installed (scripts/setup.sh installs it)", mkfs)
	}
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"-q"}, mkfsArgs...), img)
	if fstype == "ext4" {
		args = append([]string{"-F"}, args...)
	}
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	dir, err := os.MkdirTemp("", "bwloop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return &Loop{Dir: dir, Image: img}
}

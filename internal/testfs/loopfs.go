package testfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// LoopFS is a file system of its own on a loop device (an image file in
// the test's temp directory), mounted at Dir until its test ends: a
// small real disk-backed file system to fill (ENOSPC on ext4 or XFS, not
// tmpfs's page-cache accounting).
type LoopFS struct {
	Dir   string
	Image string
	t     testing.TB
}

// NewLoopFS makes a file system of type fstype ("ext4", "xfs") on an
// image of size bytes and mounts it with a loop device. ext4 is made
// with no blocks reserved for root (-m 0): the host runs as root, so
// reserved blocks would only move the point where it fills. The test is
// skipped without root or the mkfs tool unless CI is set, where that
// fails it.
func NewLoopFS(t testing.TB, size int64, fstype string) *LoopFS {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("a loop mount needs root")
	}
	mkfs, err := exec.LookPath("mkfs." + fstype)
	if err != nil {
		skip("mkfs.%s: %v", fstype, err)
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"-q", img}
	if fstype == "ext4" {
		args = []string{"-q", "-F", "-m", "0", img}
	}
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", mkfs, args, err, out)
	}
	dir, err := os.MkdirTemp("", "bwloop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		skip("mount -o loop: %v: %s", err, out)
	}
	// Lazy, registered last so it runs first: a killed server may still
	// hold files; the loop device goes with the last reference.
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return &LoopFS{Dir: dir, Image: img, t: t}
}

// Ballast fills the file system but for keep bytes with one file of
// zeroes written for real (not a hole) and returns its path; removing it
// frees the space again.
func (l *LoopFS) Ballast(keep int64) string {
	l.t.Helper()
	p := filepath.Join(l.Dir, "ballast")
	free := l.Free()
	n := max(free-keep, 0) / (1 << 20)
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=1M", "count="+strconv.FormatInt(n, 10), "conv=fsync").CombinedOutput(); err != nil {
		l.t.Fatalf("ballast: %v: %s", err, out)
	}
	return p
}

// Free is the bytes the file system has free now.
func (l *LoopFS) Free() int64 {
	l.t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.Dir, &st); err != nil {
		l.t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

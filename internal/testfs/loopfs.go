package testfs

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Ballast fills the file system but for keep bytes with one file of
// zeroes written for real (not a hole) and returns its path; removing it
// frees the space again. (Make ext4 with "-m", "0": the host runs as
// root, so reserved blocks would only move the point where it fills.)
func (l *Loop) Ballast(t testing.TB, keep int64) string {
	t.Helper()
	p := filepath.Join(l.Dir, "ballast")
	n := max(l.Free(t)-keep, 0) / (1 << 20)
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=1M", "count="+strconv.FormatInt(n, 10), "conv=fsync").CombinedOutput(); err != nil {
		t.Fatalf("ballast: %v: %s", err, out)
	}
	return p
}

// Free is the bytes the file system has free now.
func (l *Loop) Free(t testing.TB) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.Dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

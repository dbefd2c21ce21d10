package testfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tmpfs is a mounted tmpfs, unmounted when its test ends.
type Tmpfs struct {
	Dir string
	t   testing.TB
}

// NewTmpfs mounts a tmpfs of size (mount's syntax: "64m", "256k") at a
// new directory with a short path (unix sockets inside it must fit
// sun_path's 108 bytes, which t.TempDir names can pass).
func NewTmpfs(t testing.TB, size string) *Tmpfs {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir, err := os.MkdirTemp("", "bwfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	// Lazy: a process of the test (a killed server) may still hold it.
	// Registered last, so it runs before the directory's removal.
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return &Tmpfs{Dir: dir, t: t}
}

// Resize grows (or shrinks) the tmpfs in place: its files stay, open
// ones too.
func (m *Tmpfs) Resize(size string) {
	m.t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, m.Dir).CombinedOutput(); err != nil {
		m.t.Fatalf("remount tmpfs: %v: %s", err, out)
	}
}

// ReadOnly mounts dir again, read-only, and returns where: a read-only
// bind mount, which binds root too. It fails the test if the view can
// be written.
func ReadOnly(t testing.TB, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a bind mount needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "--bind", dir, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount --bind: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(mnt, "probe"), nil, 0o600); err == nil {
		t.Fatal("the read-only bind mount can be written")
	}
	return mnt
}

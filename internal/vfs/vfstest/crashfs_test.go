package vfstest

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/blockwise/blockwise/internal/vfs"
)

func write(t *testing.T, fsys vfs.FS, name, data string, sync bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
}

// read returns the content of name, or "-" when it does not exist.
func read(t *testing.T, fsys vfs.FS, name string) string {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return "-"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCrashKeepsOnlyWhatWasSynced(t *testing.T) {
	c := NewCrashFS()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.MkdirAll("/a/b", 0o700))
	must(vfs.SyncDir(c, "/"))
	must(vfs.SyncDir(c, "/a"))
	write(t, c, "/a/b/synced", "one", true)
	write(t, c, "/a/b/unsynced", "two", false)
	must(vfs.SyncDir(c, "/a/b"))
	write(t, c, "/a/b/synced", "ONE", false) // rewritten, not synced
	write(t, c, "/a/b/tmp", "five", true)
	must(vfs.WriteAtomic(c, "/a/b/atomic", []byte("four"))) // syncs /a/b
	write(t, c, "/a/b/newfile", "three", true)
	must(c.Rename("/a/b/tmp", "/a/b/renamed")) // no directory sync after
	must(c.Remove("/a/b/unsynced"))            // nor after this
	must(c.Mkdir("/a/c", 0o700))

	after := c.Crash()
	for name, want := range map[string]string{
		"/a/b/synced":   "one",  // the unsynced rewrite (and truncation) is gone
		"/a/b/unsynced": "",     // the entry was durable, the data never synced
		"/a/b/newfile":  "-",    // data synced, entry not: gone
		"/a/b/atomic":   "four", // temp, sync, rename, sync dir
		"/a/b/tmp":      "five", // the rename is undone
		"/a/b/renamed":  "-",
	} {
		if got := read(t, after, name); got != want {
			t.Errorf("%s after crash = %q, want %q", name, got, want)
		}
	}
	if _, err := after.Stat("/a/c"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unsynced mkdir survived: %v", err)
	}
	if _, err := c.Stat("/a"); !errors.Is(err, ErrCrashed) {
		t.Errorf("the crashed FS still answers: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	c := NewCrashFS()
	l, err := c.Lock("/lock")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lock("/lock"); err == nil {
		t.Fatal("second lock succeeded")
	}
	l.Close()
	if _, err := c.Lock("/lock"); err != nil {
		t.Fatal(err)
	}
}

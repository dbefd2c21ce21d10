package vfstest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/blockwise/blockwise/internal/vfs"
)

const pages = 16

// tornFile syncs pages of 'a' to /f, then overwrites them with 'b' and
// extends the file by a page of 'c', all unsynced.
func tornFile(t *testing.T) *CrashFS {
	t.Helper()
	c := NewCrashFS()
	write(t, c, "/f", string(bytes.Repeat([]byte{'a'}, pages*PageSize)), true)
	if err := vfs.SyncDir(c, "/"); err != nil {
		t.Fatal(err)
	}
	f, err := c.OpenFile("/f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{'b'}, pages*PageSize), 0)
	f.WriteAt(bytes.Repeat([]byte{'c'}, PageSize), pages*PageSize)
	f.Close()
	return c
}

// pattern is the page letters of a file ("aabba..."), "?" for a mixed page.
func pattern(data []byte) string {
	var s []byte
	for pg := 0; pg < len(data); pg += PageSize {
		p := data[pg:min(pg+PageSize, len(data))]
		if bytes.Count(p, p[:1]) != len(p) {
			s = append(s, '?')
		} else {
			s = append(s, p[0])
		}
	}
	return string(s)
}

// TestCutTearsAtPages: unsynced data survives or reverts whole pages at a
// time, both outcomes occur, the size is the old or the new one, and the
// same seed tears the same way.
func TestCutTearsAtPages(t *testing.T) {
	seen := map[byte]int{}
	sizes := map[int]bool{}
	for seed := range int64(50) {
		got := read(t, tornFile(t).Cut(seed), "/f")
		p := pattern([]byte(got))
		if len(got) != pages*PageSize && len(got) != (pages+1)*PageSize {
			t.Fatalf("seed %d: size %d, neither the synced nor the current one", seed, len(got))
		}
		sizes[len(got)] = true
		for i := range len(p) {
			want := "ab"
			if i == pages {
				want = "c\x00"
			}
			if !bytes.ContainsRune([]byte(want), rune(p[i])) {
				t.Fatalf("seed %d: page %d is %q (want one of %q): %s", seed, i, p[i], want, p)
			}
			seen[p[i]]++
		}
		if again := read(t, tornFile(t).Cut(seed), "/f"); again != got {
			t.Fatalf("seed %d: two cuts differ", seed)
		}
	}
	if seen['a'] == 0 || seen['b'] == 0 || seen['c'] == 0 || seen[0] == 0 || len(sizes) != 2 {
		t.Fatalf("some outcome never happened in 50 cuts: pages %v, sizes %v", seen, sizes)
	}
}

// TestCutKeepsSynced: a Cut never loses what was synced, however it tears
// the rest.
func TestCutKeepsSynced(t *testing.T) {
	for seed := range int64(30) {
		c := NewCrashFS()
		write(t, c, "/s", "synced", true)
		write(t, c, "/u", "unsynced", false)
		if err := vfs.SyncDir(c, "/"); err != nil {
			t.Fatal(err)
		}
		if err := vfs.WriteAtomic(c, "/atomic", []byte("new")); err != nil {
			t.Fatal(err)
		}
		after := c.Cut(seed)
		if got := read(t, after, "/s"); got != "synced" {
			t.Fatalf("seed %d: synced file reads %q", seed, got)
		}
		if got := read(t, after, "/atomic"); got != "new" {
			t.Fatalf("seed %d: atomic file reads %q", seed, got)
		}
		// The size may have reached the device without the page: zeroes.
		if got := read(t, after, "/u"); got != "" && got != "unsynced" && got != "\x00\x00\x00\x00\x00\x00\x00\x00" {
			t.Fatalf("seed %d: unsynced file reads %q", seed, got)
		}
	}
}

// TestCutDirectoryEntries: creations, removals and renames without a
// directory sync each may or may not survive; a rename is all or nothing.
func TestCutDirectoryEntries(t *testing.T) {
	outcomes := map[string]bool{}
	for seed := range int64(60) {
		c := NewCrashFS()
		write(t, c, "/old", "old", true)
		write(t, c, "/gone", "gone", true)
		write(t, c, "/src", "src", true)
		if err := vfs.SyncDir(c, "/"); err != nil {
			t.Fatal(err)
		}
		write(t, c, "/new", "new", true)
		if err := c.Remove("/gone"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rename("/src", "/dst"); err != nil {
			t.Fatal(err)
		}
		after := c.Cut(seed)
		src, dst := read(t, after, "/src"), read(t, after, "/dst")
		if (src == "-") == (dst == "-") || src+dst != "src-" && src+dst != "-src" {
			t.Fatalf("seed %d: rename half done: src %q, dst %q", seed, src, dst)
		}
		key := fmt.Sprintf("new=%s gone=%s dst=%s", read(t, after, "/new"), read(t, after, "/gone"), dst)
		outcomes[key] = true
		if read(t, after, "/old") != "old" {
			t.Fatalf("seed %d: a synced entry was lost", seed)
		}
	}
	for _, want := range []string{"new=new", "new=-", "gone=gone", "gone=-", "dst=src", "dst=-"} {
		found := false
		for k := range outcomes {
			found = found || bytes.Contains([]byte(k+" "), []byte(want+" "))
		}
		if !found {
			t.Errorf("outcome %q never happened in 60 cuts: %v", want, outcomes)
		}
	}
}

// TestCutAfterStopsAtTheCall: an armed CrashFS cuts just before the n-th
// next mutating call, fails it and every later call, and Crashed returns
// the machine after the cut; reads before do not count.
func TestCutAfterStopsAtTheCall(t *testing.T) {
	c := NewCrashFS()
	c.CutAfter(2, 1)
	f, err := c.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o600) // 1st
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err != nil { // 2nd
		t.Fatal(err)
	}
	if _, err := c.Stat("/f"); err != nil { // a read: not counted
		t.Fatal(err)
	}
	if c.Crashed() != nil {
		t.Fatal("cut too early")
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) { // 3rd: the cut
		t.Fatalf("sync after the cut: %v", err)
	}
	if _, err := c.Stat("/f"); !errors.Is(err, ErrCrashed) {
		t.Fatalf("stat after the cut: %v", err)
	}
	after := c.Crashed()
	if after == nil {
		t.Fatal("no file system after the cut")
	}
	if got := read(t, after, "/f"); got != "-" && got != "" && got != "x" {
		t.Fatalf("after the cut /f reads %q", got)
	}
}

func TestLinkIsDurableAfterDirSync(t *testing.T) {
	c := NewCrashFS()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Mkdir("/a", 0o700))
	must(c.Mkdir("/b", 0o700))
	must(vfs.SyncDir(c, "/"))
	write(t, c, "/a/f", "data", true)
	must(c.Link("/a/f", "/b/f"))
	if err := c.Link("/a/f", "/b/f"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("link over an existing name: %v", err)
	}
	must(vfs.SyncDir(c, "/b"))
	if f, err := c.OpenFile("/a/f", os.O_RDONLY, 0); err != nil || vfs.Links(f) != 2 {
		t.Fatalf("a file with two names reports %d links (%v)", vfs.Links(f), err)
	}
	after := c.Crash()
	if got := read(t, after, "/b/f"); got != "data" {
		t.Fatalf("linked and synced name reads %q", got)
	}
	if got := read(t, after, "/a/f"); got != "-" {
		t.Fatalf("unsynced original name survived Crash: %q", got)
	}
}

// TestDirectoryRename: a renamed directory keeps its synced entries under
// its new name once the parent is synced, and after a Cut without that
// sync is whole under one of its names.
func TestDirectoryRename(t *testing.T) {
	setup := func() *CrashFS {
		c := NewCrashFS()
		if err := c.Mkdir("/tmp-d", 0o700); err != nil {
			t.Fatal(err)
		}
		write(t, c, "/tmp-d/f", "data", true)
		if err := vfs.SyncDir(c, "/tmp-d"); err != nil {
			t.Fatal(err)
		}
		if err := vfs.SyncDir(c, "/"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rename("/tmp-d", "/d"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := setup()
	if err := vfs.SyncDir(c, "/"); err != nil {
		t.Fatal(err)
	}
	after := c.Crash()
	if got := read(t, after, "/d/f"); got != "data" {
		t.Fatalf("synced rename: /d/f reads %q", got)
	}
	if got := read(t, after, "/tmp-d/f"); got != "-" {
		t.Fatalf("synced rename: old name still reads %q", got)
	}
	both := map[string]bool{}
	for seed := range int64(20) {
		after := setup().Cut(seed)
		old, cur := read(t, after, "/tmp-d/f"), read(t, after, "/d/f")
		if old+cur != "data-" && old+cur != "-data" {
			t.Fatalf("seed %d: /tmp-d/f %q, /d/f %q", seed, old, cur)
		}
		both[cur] = true
	}
	if len(both) != 2 {
		t.Fatalf("the rename always or never survived: %v", both)
	}
}

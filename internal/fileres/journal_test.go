package fileres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// same copy.
//
// Two journals: one the kernel wrote (a copy taken while mounted), and
// one debugfs wrote from the blocks the kernel changed. The kernel's copy
// cannot promise its homes are stale (the flusher may write them back
// before the copy, as it did on a busy CI machine), so only the debugfs
// journal is required to matter: without its replay (needs_recovery
// cleared) the new directory is missing, so the test does exercise the
// journal.
func TestJournalReplay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		make  func(testing.TB, string) string
		stale bool // the homes are known not to hold the change
	}{
		{"kernel", crashConsistentExt4, false},
		{"debugfs", journalledExt4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			snap := tc.make(t, dir)
			checkReplay(t, dir, snap)
			newdirAtHome := homesHoldNewdir(t, dir, snap)
			switch {
			case newdirAtHome && tc.stale:
				t.Fatal("without the journal the new directory is there too: the test does not test the replay")
			case newdirAtHome:
				t.Log("the flusher wrote the homes before the copy: this journal's replay was redundant")
			}
		})
	}
}

// checkReplay compares the reader's tree of snap with the kernel's after
// e2fsck replayed the journal of a copy.
func checkReplay(t *testing.T, dir, snap string) {
	recovered := filepath.Join(dir, "recovered")
	imagetest.Run(t, nil, "cp", "--sparse=always", snap, recovered)
	imagetest.RunCodes(t, []int{0, 1}, "e2fsck", "-fy", recovered)
	want := filepath.Join(dir, "want")
	os.Mkdir(want, 0o755)
	imagetest.Run(t, nil, "mount", "-o", "ro,loop", recovered, want)
	defer imagetest.Run(t, nil, "umount", want)
	if _, err := os.Stat(filepath.Join(want, "newdir/fxxx")); err != nil {
		t.Fatalf("the recovered copy lacks the change: %v", err)
	}

	p := openTestPoint(t, snap)
	if d := p.Volumes[0].Desc; !strings.Contains(d, "journal replayed") {
		t.Fatalf("volume: %s", d)
	}
	out := t.TempDir()
	if _, err := p.Restore(context.Background(), []string{"/disk"}, out); err != nil {
		t.Fatal(err)
	}
	imagetest.CompareTree(t, want, filepath.Join(out, "disk"), imagetest.CompareOptions{})
}

// homesHoldNewdir reports whether a copy of snap with needs_recovery
// cleared (its journal ignored) already has the new directory.
func homesHoldNewdir(t *testing.T, dir, snap string) bool {
	stale := filepath.Join(dir, "stale")
	imagetest.Run(t, nil, "cp", "--sparse=always", snap, stale)
	imagetest.Run(t, nil, "debugfs", "-w", "-R", "feature -needs_recovery", stale)
	_, err := openTestPoint(t, stale).Lookup(context.Background(), "/disk/newdir")
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
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

// journalledExt4 makes the same change as crashConsistentExt4 on a copy
// of a fresh image, through the kernel, then writes every block the
// change touched (but the superblock's and the journal's own) as one
// committed transaction into the fresh image's journal with debugfs:
// the homes are the old ones for sure, and only a replay gives the new
// tree. It returns that image.
func journalledExt4(t testing.TB, dir string) string {
	t.Helper()
	imagetest.NeedTools(t, "mkfs.ext4", "mount", "umount", "e2fsck", "debugfs")
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "m")
	old, changed := filepath.Join(dir, "old"), filepath.Join(dir, "changed")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc/hosts"), []byte("old\n"), 0o644)
	os.Mkdir(mnt, 0o755)
	imagetest.Ext(t, "ext4", src, old, 24)
	imagetest.Run(t, nil, "cp", "--sparse=always", old, changed)
	imagetest.Run(t, nil, "mount", "-o", "loop", changed, mnt)
	os.Mkdir(filepath.Join(mnt, "newdir"), 0o750)
	for i := range 20 {
		os.WriteFile(filepath.Join(mnt, "newdir", "f"+strings.Repeat("x", i)), bytes.Repeat([]byte("a"), 5000), 0o644)
	}
	os.WriteFile(filepath.Join(mnt, "etc/hosts"), []byte("bbb\n"), 0o644)
	imagetest.Run(t, nil, "umount", mnt)

	blocks, data := changedBlocks(t, old, changed)
	if len(blocks) == 0 {
		t.Fatal("the kernel's change touched no block")
	}
	payload := filepath.Join(dir, "payload")
	must(t, os.WriteFile(payload, data, 0o644))
	cmds := filepath.Join(dir, "cmds")
	must(t, os.WriteFile(cmds, []byte("jo\njw -b "+strings.Join(blocks, ",")+" "+payload+"\njc\n"), 0o644))
	imagetest.Run(t, nil, "debugfs", "-w", "-f", cmds, old)
	if out := imagetest.Run(t, nil, "dumpe2fs", "-h", old); !strings.Contains(out, "needs_recovery") {
		t.Fatalf("debugfs left no transaction to recover:\n%s", out)
	}
	return old
}

// changedBlocks lists the blocks of b that differ from a, leaving out
// the superblock's block and the journal's, and returns their new
// contents in that order.
func changedBlocks(t testing.TB, a, b string) ([]string, []byte) {
	t.Helper()
	oldImg, err := os.ReadFile(a)
	must(t, err)
	newImg, err := os.ReadFile(b)
	must(t, err)
	bs := 1024 << binary.LittleEndian.Uint32(oldImg[1024+24:])
	skip := map[string]bool{fmt.Sprint(1024 / bs): true}
	for _, n := range strings.Fields(imagetest.Run(t, nil, "debugfs", "-R", "blocks <8>", a)) {
		skip[n] = true
	}
	var blocks []string
	var data []byte
	for i := 0; (i+1)*bs <= len(oldImg); i++ {
		o, n := oldImg[i*bs:(i+1)*bs], newImg[i*bs:(i+1)*bs]
		if !bytes.Equal(o, n) && !skip[fmt.Sprint(i)] {
			blocks = append(blocks, fmt.Sprint(i))
			data = append(data, n...)
		}
	}
	return blocks, data
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package imagetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// xfsEnv lets mkfs.xfs make filesystems under its 300 MB floor (the
// variable fstests sets for the same reason).
var xfsEnv = []string{"TEST_DIR=/tmp", "TEST_DEV=/dev/null", "QA_CHECK_FS=1"}

// XFS makes an XFS image of sizeMiB (mkfs.xfs with extra options, v5 with
// CRCs by default) and fills it through a loop mount, as a guest would:
// dir's tree copied with its owners, times, links and holes (cp -a), then,
// if ref is not empty, the shapes only a real filesystem's allocator makes
// (XFSExtras), and the whole mount is copied to ref to compare with. Skips
// the test where loop mounts are not permitted.
func XFS(t testing.TB, dir, img, ref string, sizeMiB int, extra ...string) {
	t.Helper()
	XFSMounted(t, img, sizeMiB, func(mnt string) {
		if dir != "" {
			Run(t, nil, "cp", "-a", "--sparse=always", dir+"/.", mnt)
		}
		if ref != "" {
			XFSExtras(t, mnt)
			must(t, os.MkdirAll(ref, 0o755))
			Run(t, nil, "cp", "-a", "--sparse=always", mnt+"/.", ref)
		}
	}, extra...)
}

// XFSMounted makes an XFS image of sizeMiB and calls fill with it loop
// mounted, to write into it as a guest would. Skips the test where loop
// mounts are not permitted.
func XFSMounted(t testing.TB, img string, sizeMiB int, fill func(mnt string), extra ...string) {
	t.Helper()
	NeedTools(t, "mkfs.xfs", "mount", "umount", "cp", "xfs_io")
	must(t, os.WriteFile(img, nil, 0o644))
	must(t, os.Truncate(img, int64(sizeMiB)<<20))
	Run(t, xfsEnv, "mkfs.xfs", append(append([]string{"-q", "-f"}, extra...), img)...)
	mnt := t.TempDir()
	// allocsize=4k: no speculative preallocation, so interleaved appends
	// fragment files as they do on a long-lived guest.
	if out, err := runErr(nil, "mount", "-o", "loop,allocsize=4k", img, mnt); err != nil {
		t.Skipf("loop mount not permitted here: %v: %s", err, out)
	}
	defer Run(t, nil, "umount", mnt)
	fill(mnt)
}

func runErr(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// XFSExtras writes into dir (a mounted XFS, or a plain directory to
// compare with) the files whose layout matters to an XFS reader: two
// files grown in turns with a sync after each block (fragmented, many
// extents), a file with every other block punched out (an extent
// B+tree), and directories of 5 (short form), 60 (block), 600 (leaf)
// and 5000 (node) entries.
func XFSExtras(t testing.TB, dir string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "frag"), 0o755))
	a, err := os.Create(filepath.Join(dir, "frag", "a"))
	must(t, err)
	b, err := os.Create(filepath.Join(dir, "frag", "b"))
	must(t, err)
	for i := range 100 {
		for j, f := range []*os.File{a, b} {
			_, err := f.Write(bytes.Repeat([]byte{byte(i), byte(j)}, 2048))
			must(t, err)
			must(t, f.Sync())
		}
	}
	must(t, a.Close())
	must(t, b.Close())
	holes := filepath.Join(dir, "frag", "holes")
	Run(t, nil, "xfs_io", "-f", "-c", "pwrite -q -S 0x5a -b 1m 0 8m", holes)
	// a target too long for the inode: a remote symlink, spanning two
	// blocks of a 1 KiB-block filesystem
	must(t, os.Symlink(strings.Repeat("remote/", 142)+"target", filepath.Join(dir, "frag", "link-remote")))
	var punch []string
	for off := 0; off < 8<<20; off += 8192 {
		punch = append(punch, "-c", fmt.Sprintf("fpunch %d 4096", off))
	}
	Run(t, nil, "xfs_io", append(punch, holes)...)
	for _, n := range []int{5, 60, 600, 5000} {
		d := filepath.Join(dir, fmt.Sprintf("dir%d", n))
		must(t, os.MkdirAll(d, 0o755))
		for i := range n {
			name := fmt.Sprintf("entry-with-a-longer-name-%06d", i)
			if n < 10 {
				name = fmt.Sprint("e", i)
			}
			must(t, os.WriteFile(filepath.Join(d, name), nil, 0o644))
		}
	}
}

// runIn runs name in dir. The shell changes directory, not the forked
// child: dir may be in a FUSE mount this process serves, and a child
// that touches it between fork and exec deadlocks the runtime (the
// forking thread holds its P through the vfork, so a garbage collection
// that stops the world waits for it, and the FUSE server that would
// answer the child's chdir waits for the collection).
func runIn(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command("sh", append([]string{"-c", `cd "$1" && shift && exec "$@"`, "sh", dir, name}, args...)...)
	return cmd.CombinedOutput()
}

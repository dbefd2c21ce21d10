// Package imagetest builds guest-like disk images with the real tools
// (mkfs.ext4 -d, mkfs.vfat + mcopy, sfdisk, pvcreate/vgcreate/
// vgcfgrestore, mkfs.xfs) and compares restored trees with their source,
// for the tests of internal/fileres and of the CLI.
package imagetest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NeedTools skips the test when a tool is missing, unless CI is set:
// there a missing tool is a failure.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (scripts/setup.sh installs it)", tool)
			}
			t.Skipf("%s not installed (scripts/setup.sh installs it)", tool)
		}
	}
}

// Run runs a command and fails the test on error.
func Run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// RunCodes runs a command that may exit with any of codes (e2fsck: 1
// is "errors corrected").
func RunCodes(t testing.TB, codes []int, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	var ee *exec.ExitError
	if err == nil || errors.As(err, &ee) && slices.Contains(codes, ee.ExitCode()) {
		return
	}
	t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
}

// BigSize is the apparent size of the tree's large sparse file: over
// 4 GiB, so 32-bit sizes and block numbers would get it wrong.
const BigSize = 5<<30 + 12345

// BigDataAt is where the large file's data stretch lies.
const BigDataAt = 4<<30 + 512<<10

// Tree fills dir with what a guest's root filesystem holds: modes,
// owners, nanosecond times, short and long symlinks (absolute and
// relative), hard links, a sparse file and one over 4 GiB, a directory
// large enough to be hashed, a FIFO, a device node and non-ASCII names.
// manyFiles sets the size of the large directory.
func Tree(t testing.TB, dir string, manyFiles int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	files := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
		data     []byte
	}{
		{"etc/hosts", 0o644, 0, 0, []byte("127.0.0.1 localhost\n")},
		{"etc/shadow", 0o640, 0, 42, []byte("root:*:19000:0:99999:7:::\n")},
		{"etc/nginx/sites-enabled/default", 0o644, 0, 0, []byte("server { listen 80; }\n")},
		{"home/user/doc.txt", 0o600, 1000, 1000, []byte("a user's document\n")},
		{"home/user/empty", 0o644, 1000, 1000, nil},
		{"bin/tool", 0o4755, 0, 0, rnd(3<<20 + 777)},
		{"data/hard1", 0o644, 0, 0, []byte("linked twice\n")},
		{"données/été.txt", 0o644, 0, 0, []byte("accents\n")},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, f.data, f.mode))
		must(t, os.Chmod(p, f.mode))
		must(t, os.Lchown(p, f.uid, f.gid))
	}
	must(t, os.Chown(filepath.Join(dir, "home/user"), 1000, 1000))
	must(t, os.Link(filepath.Join(dir, "data/hard1"), filepath.Join(dir, "home/user/hard2")))
	must(t, os.Symlink("etc/hosts", filepath.Join(dir, "link-short")))
	must(t, os.Symlink("/etc/nginx", filepath.Join(dir, "link-abs")))
	must(t, os.Symlink(strings.Repeat("long/", 20)+"target", filepath.Join(dir, "link-long")))
	sparse(t, filepath.Join(dir, "data/sparse"), 1<<20, map[int64][]byte{0: rnd(4096), 512 << 10: rnd(70000)})
	sparse(t, filepath.Join(dir, "data/big"), BigSize, map[int64][]byte{0: []byte("head"), BigDataAt: rnd(1 << 20), BigSize - 5: []byte("tail\n")})
	must(t, syscall.Mkfifo(filepath.Join(dir, "data/fifo"), 0o620))
	must(t, syscall.Mknod(filepath.Join(dir, "data/null"), syscall.S_IFCHR|0o666, 1<<8|3))
	must(t, os.MkdirAll(filepath.Join(dir, "many"), 0o755))
	for i := range manyFiles {
		must(t, os.WriteFile(filepath.Join(dir, "many", fmt.Sprintf("file-%05d", i)), fmt.Appendf(nil, "file %d\n", i), 0o644))
	}
	must(t, os.MkdirAll(filepath.Join(dir, "empty-dir"), 0o700))
	SetTimes(t, dir)
}

func sparse(t testing.TB, path string, size int64, data map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	for off, b := range data {
		_, err := f.WriteAt(b, off)
		must(t, err)
	}
	must(t, f.Truncate(size))
}

// SetTimes gives every file under dir a distinct time with nanoseconds
// (deepest first, so a directory's time is not changed by its entries).
func SetTimes(t testing.TB, dir string) {
	t.Helper()
	var paths []string
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		tm := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Hour + time.Duration(i*7919+1)*time.Microsecond)
		ts := []syscall.Timespec{syscall.NsecToTimespec(tm.UnixNano()), syscall.NsecToTimespec(tm.UnixNano())}
		must(t, utimesNoFollow(paths[i], ts))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Ext makes an ext2/3/4 image file of sizeMiB from dir with mkfs.EXT -d.
// For ext3/4 it then has e2fsck -D index the directories: mkfs -d writes
// every directory linear, while a guest's large ones are hashed trees.
func Ext(t testing.TB, kind, dir, img string, sizeMiB int, extra ...string) {
	t.Helper()
	args := append([]string{"-q", "-F", "-d", dir, "-I", "256"}, extra...)
	Run(t, nil, "mkfs."+kind, append(args, img, fmt.Sprintf("%dM", sizeMiB))...)
	if kind != "ext2" {
		// Exit 1: "errors corrected", which is what -D reports when it
		// rebuilt directories.
		RunCodes(t, []int{0, 1}, "e2fsck", "-fyD", img)
	}
}

// FAT makes a FAT image of sizeMiB (bits 12, 16 or 32) holding dir's
// files with their times (mcopy -m).
func FAT(t testing.TB, bits int, dir, img string, sizeMiB int) {
	t.Helper()
	must(t, os.WriteFile(img, nil, 0o644))
	must(t, os.Truncate(img, int64(sizeMiB)<<20))
	Run(t, nil, "mkfs.vfat", "-F", fmt.Sprint(bits), "-n", "TESTFAT", img)
	ents, err := os.ReadDir(dir)
	must(t, err)
	args := []string{"-i", img, "-s", "-m", "-Q"}
	for _, e := range ents {
		args = append(args, filepath.Join(dir, e.Name()))
	}
	Run(t, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", append(args, "::/")...)
}

// FATTree fills dir with files for a FAT volume: long and short names, a
// nested directory, a file spanning many clusters; times on even seconds
// (FAT keeps two-second steps).
func FATTree(t testing.TB, dir string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 300<<10+3)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	for p, data := range map[string][]byte{
		"README.TXT":                    []byte("short name\n"),
		"A Long File Name Document.txt": []byte("long name\n"),
		"EFI/BOOT/BOOTX64.EFI":          big,
		"EFI/BOOT/grub.cfg":             []byte("set timeout=5\n"),
	} {
		path := filepath.Join(dir, p)
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, data, 0o644))
	}
	tm := time.Date(2023, 7, 14, 12, 30, 44, 0, time.UTC)
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			err = os.Chtimes(p, tm, tm)
		}
		return err
	}))
}

// Part is one partition of a disk image: its content (an image file, or
// "" for an LVM physical volume made by Disk) and its GPT type.
type Part struct {
	Image   string
	SizeMiB int
	Type    string // sfdisk type: "L" linux, "U" EFI, "V" LVM...
}

// Disk writes a partition table (label "gpt" or "dos") with parts, 1 MiB
// aligned, into a new sparse disk image of sizeMiB and copies each
// partition's image into place. It returns each partition's byte offset.
func Disk(t testing.TB, img, label string, sizeMiB int, parts []Part) []int64 {
	t.Helper()
	must(t, os.WriteFile(img, nil, 0o644))
	must(t, os.Truncate(img, int64(sizeMiB)<<20))
	var script bytes.Buffer
	fmt.Fprintf(&script, "label: %s\n", label)
	offs := make([]int64, len(parts))
	start := int64(1)
	for i, p := range parts {
		if label == "dos" && i == 1 && len(parts) > 2 {
			// The rest go in an extended partition (logical 5, 6...).
			fmt.Fprintf(&script, "start=%dMiB, type=Ex\n", start)
			start++
		}
		fmt.Fprintf(&script, "start=%dMiB, size=%dMiB, type=%s\n", start, p.SizeMiB, p.Type)
		offs[i] = start << 20
		start += int64(p.SizeMiB) + 1
	}
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = &script
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s\n%s", err, out, script.String())
	}
	for i, p := range parts {
		if p.Image != "" {
			Place(t, p.Image, img, offs[i])
		}
	}
	return offs
}

// Place copies image src into dst at byte offset off, holes kept.
func Place(t testing.TB, src, dst string, off int64) {
	t.Helper()
	Run(t, nil, "dd", "if="+src, "of="+dst, "bs=1M", fmt.Sprintf("seek=%d", off>>20), "conv=notrunc,sparse", "status=none")
}

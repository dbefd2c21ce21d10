package main

import (
	"bufio"
	"bytes"
	le "encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// putImage writes a raw image into a host disk over NBD.
func (e *e2e) putImage(t *testing.T, img, disk string) {
	t.Helper()
	putImage(t, img, e.uri(disk))
}

func putImage(t *testing.T, img, uri string) {
	t.Helper()
	needTools(t, "qemu-img")
	if out, err := exec.Command("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
}

// stdout runs the CLI and returns its stdout, failing the test unless it
// exits 0.
func (e *e2e) stdout(t *testing.T, args ...string) []byte {
	t.Helper()
	r := runCLI(t, e.command(nil, args...))
	if r.code != 0 {
		t.Fatalf("blockwise %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return []byte(r.stdout)
}

// File-level restore through the CLI: a guest-like GPT disk (ext4, FAT32,
// LVM2 with ext2, swap) written into a host disk, backed up twice with a
// file changed in between; ls, dump (file and tar), restore --include and
// mount give back the source tree byte for byte, with modes, owners,
// times, symlinks, hard links, device nodes and sparse files (one over
// 4 GiB); each point shows its own version of the changed file.
func TestFileRestoreCLI(t *testing.T) {
	e := newE2E(t, true)
	dir := t.TempDir()
	g := imagetest.BuildGuestDisk(t, dir, 300)
	e.must(t, "disk", "create", "vm", "--size", strconv.Itoa(imagetest.GuestDiskMiB)+"M")
	e.putImage(t, g.Img, "vm")
	e.must(t, "backup", "vm")
	first := e.points(t)[0].ID
	v1, _ := os.ReadFile(filepath.Join(g.Tree, "etc/hosts"))
	v2 := []byte("10.0.0.1 changed\n")
	tree2 := filepath.Join(dir, "tree2") // part1's tree in the second point
	imagetest.Run(t, nil, "cp", "-a", g.Tree, tree2)
	if err := os.WriteFile(filepath.Join(tree2, "etc/hosts"), v2, 0o644); err != nil {
		t.Fatal(err)
	}
	g.PutExt4(t, tree2)
	e.putImage(t, g.Img, "vm")
	e.must(t, "backup", "vm")

	top := e.must(t, "ls", "latest", "--disk", "vm")
	for _, want := range []string{"part1", "ext4", "vfat (FAT32)", "volume group bwtest", "part4", "swap"} {
		if !strings.Contains(top, want) {
			t.Errorf("ls /: no %q in\n%s", want, top)
		}
	}
	var rows []lsRow
	e.jsonOut(t, &rows, "ls", "latest", "/part1/etc")
	if len(rows) != 3 || rows[1].Name != "nginx" || rows[2].Name != "shadow" || rows[2].Mode != "-rw-r-----" || rows[2].GID != 42 {
		t.Errorf("ls /part1/etc: %+v", rows)
	}
	if out := e.must(t, "ls", "latest", "/part3"); !strings.Contains(out, "bwtest-root") {
		t.Errorf("ls /part3: %s", out)
	}
	if out := e.must(t, "ls", "latest", "/part1/link-long"); !strings.Contains(out, "-> long/long/") {
		t.Errorf("ls of a long symlink: %s", out)
	}

	// Both versions of the changed file, each from its point.
	if got := e.stdout(t, "dump", first, "/part1/etc/hosts"); !bytes.Equal(got, v1) {
		t.Errorf("first point's hosts: %q, want %q", got, v1)
	}
	if got := e.stdout(t, "dump", "latest", "--disk", "vm", "/part1/etc/hosts"); !bytes.Equal(got, v2) {
		t.Errorf("latest point's hosts: %q, want %q", got, v2)
	}
	want, _ := os.ReadFile(filepath.Join(g.Tree, "bin/tool"))
	if got := e.stdout(t, "dump", "latest", "/part3/bwtest-root/bin/tool"); !bytes.Equal(got, want) {
		t.Errorf("dump of a 3 MiB file from the LVM volume: %d bytes, differs", len(got))
	}

	// A directory as tar, extracted with GNU tar.
	tarDir := t.TempDir()
	x := exec.Command("tar", "-x", "-p", "--numeric-owner", "-C", tarDir)
	x.Stdin = bytes.NewReader(e.stdout(t, "dump", "latest", "/part1/etc"))
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v: %s", err, out)
	}
	imagetest.CompareTree(t, filepath.Join(tree2, "etc"), filepath.Join(tarDir, "etc"), imagetest.CompareOptions{TimeStep: 1e9})

	to := t.TempDir()
	e.must(t, "restore", "latest", "--include", "/part1", "--include", "/part2", "--include", "/part3/bwtest-root", "--to", to)
	imagetest.CompareTree(t, tree2, filepath.Join(to, "part1"), imagetest.CompareOptions{TimeStep: 1e9, Sparse: true})
	imagetest.CompareTree(t, g.Tree, filepath.Join(to, "part3/bwtest-root"), imagetest.CompareOptions{TimeStep: 1e9, Sparse: true})
	imagetest.CompareTree(t, g.FATTree, filepath.Join(to, "part2"), imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9})
	to1 := t.TempDir()
	e.must(t, "restore", first, "--include", "/part1/etc/hosts", "--to", to1)
	if got, _ := os.ReadFile(filepath.Join(to1, "part1/etc/hosts")); !bytes.Equal(got, v1) {
		t.Errorf("restore --include of the first point's hosts: %q", got)
	}

	e.mountAndCompare(t, g, tree2)

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"ls", "0123456789abcdef", "/"}, exitNotFound, "not found"},
		{[]string{"ls", "latest", "/part1/../etc"}, exitUsage, "outside the filesystem"},
		{[]string{"dump", "latest", "/part1/etc/nope"}, exitNotFound, "nope"},
		{[]string{"restore", "latest", "--include", "/part1/etc/../../x", "--to", t.TempDir()}, exitUsage, "outside the filesystem"},
		{[]string{"ls", "latest", "/part4/x"}, exitFailure, "volume part4 (linux swap"},
		{[]string{"restore", "latest", "--include", "/part1/etc", "--to", to}, exitFailure, "exists"},
	} {
		out, code := e.run(t, c.args...)
		if code != c.code || !strings.Contains(out, c.msg) {
			t.Errorf("blockwise %s: exit %d, want %d with %q: %s", strings.Join(c.args, " "), code, c.code, c.msg, out)
		}
	}
}

// mountAndCompare mounts the latest point, compares it with the source
// tree, checks that a second mount on the same directory is refused, and
// ends the mount with SIGTERM.
func (e *e2e) mountAndCompare(t *testing.T, g imagetest.GuestDisk, tree1 string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil && os.Getenv("CI") == "" {
		t.Log("no /dev/fuse: mount not tested")
		return
	}
	mnt := t.TempDir()
	cmd := e.command(nil, "mount", "latest", "--disk", "vm", mnt)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
			exec.Command("umount", "-l", mnt).Run()
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.Contains(line, "mounted") {
		t.Fatalf("mount: %q %v: %s", line, err, stderr.String())
	}
	imagetest.CompareTree(t, tree1, filepath.Join(mnt, "part1"), imagetest.CompareOptions{TimeStep: 1e9})
	imagetest.CompareTree(t, g.Tree, filepath.Join(mnt, "part3/bwtest-root"), imagetest.CompareOptions{TimeStep: 1e9})
	imagetest.CompareTree(t, g.FATTree, filepath.Join(mnt, "part2"), imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9})
	if o, code := e.run(t, "mount", "latest", mnt); code != exitBusy || !strings.Contains(o, "mount point") {
		t.Errorf("second mount on %s: exit %d: %s", mnt, code, o)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mount after SIGTERM: %v: %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount did not end on SIGTERM")
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Fatalf("%s still mounted after SIGTERM", mnt)
	}
}

// A damaged superblock and a damaged inode table: clear errors naming the
// partition and what was found there (exit 6), never a crash; the
// undamaged partition still reads.
func TestFileRestoreDamagedCLI(t *testing.T) {
	e := newE2E(t, true)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	imagetest.Tree(t, tree, 20)
	p1, p2, img := filepath.Join(dir, "p1"), filepath.Join(dir, "p2"), filepath.Join(dir, "disk.img")
	imagetest.Ext(t, "ext4", tree, p1, 16)
	imagetest.Ext(t, "ext4", tree, p2, 16)
	damageSuperblock(t, p1)
	damageInodeTable(t, p2)
	imagetest.Disk(t, img, "gpt", 40, []imagetest.Part{{Image: p1, SizeMiB: 16, Type: "L"}, {Image: p2, SizeMiB: 16, Type: "L"}})
	e.must(t, "disk", "create", "vm", "--size", "40M")
	e.putImage(t, img, "vm")
	e.must(t, "backup", "vm")
	top := e.must(t, "ls", "latest")
	if !strings.Contains(top, "volume part1 (ext2/3/4)") || !strings.Contains(top, "block size") {
		t.Errorf("ls / does not name the damaged superblock:\n%s", top)
	}
	for _, c := range []struct{ path, msg string }{
		{"/part1/etc", "volume part1 (ext2/3/4): ext: block size"},
		{"/part2/etc", "volume part2 (ext2/3/4): ext: root inode"},
	} {
		out, code := e.run(t, "ls", "latest", c.path)
		if code != exitCorrupt || !strings.Contains(out, c.msg) || !strings.Contains(out, "damaged") {
			t.Errorf("ls %s: exit %d, want %d with %q: %s", c.path, code, exitCorrupt, c.msg, out)
		}
	}
	for _, args := range [][]string{{"dump", "latest", "/part2/etc"}, {"restore", "latest", "--include", "/part2", "--to", t.TempDir()}} {
		if out, code := e.run(t, args...); code != exitCorrupt {
			t.Errorf("%v: exit %d: %s", args, code, out)
		}
	}
}

// damageSuperblock gives the superblock an impossible block size.
func damageSuperblock(t *testing.T, img string) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(le.LittleEndian.AppendUint32(nil, 40), 1024+0x18); err != nil {
		t.Fatal(err)
	}
}

// damageInodeTable overwrites group 0's inode table (where dumpe2fs says
// it is) with a byte pattern.
func damageInodeTable(t *testing.T, img string) {
	t.Helper()
	out := imagetest.Run(t, nil, "dumpe2fs", img)
	m := regexp.MustCompile(`Inode table at (\d+)-(\d+)`).FindStringSubmatch(out)
	bs := regexp.MustCompile(`Block size:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil || bs == nil {
		t.Fatalf("dumpe2fs: no inode table: %s", out)
	}
	first, _ := strconv.ParseInt(m[1], 10, 64)
	size, _ := strconv.ParseInt(bs[1], 10, 64)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5A, 0xA5, 0x41, 0x00}, int(size)), first*size); err != nil {
		t.Fatal(err)
	}
}

package fileres

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// The fuzz tests feed the readers images that are a small built disk
// (GPT: ext4 with 4 KiB blocks, ext2 with 1 KiB blocks and block maps,
// FAT16, an MBR-in-GPT-free layout for the MBR fuzzer) with patches
// applied: the fuzzer mutates a list of (offset, bytes) patches, so its
// changes land in the superblocks, descriptors, inode tables, directories
// and FATs rather than in file data. Whatever the patches, the readers
// must return (an error is fine) without a panic, a hang or an
// unbounded allocation. go test runs the seeds; -fuzz runs them for as
// long as asked (scripts/fuzz.sh).

var (
	fuzzOnce sync.Once
	fuzzImg  []byte
	fuzzMeta []int64 // interesting offsets: partition starts
)

// fuzzBase builds the small disk the fuzzers patch.
func fuzzBase(t testing.TB) []byte {
	imagetest.NeedTools(t, "mkfs.ext4", "mkfs.ext2", "mkfs.vfat", "mcopy", "sfdisk", "dd")
	fuzzOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fileresfuzz")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		tree := filepath.Join(dir, "tree")
		for i, p := range []string{"etc/hosts", "etc/a/b/c", "home/u/doc", "x/y"} {
			os.MkdirAll(filepath.Join(tree, filepath.Dir(p)), 0o755)
			os.WriteFile(filepath.Join(tree, p), bytes.Repeat([]byte{byte('a' + i)}, 3000*i+5), 0o644)
		}
		os.Symlink("etc/hosts", filepath.Join(tree, "ln"))
		os.Link(filepath.Join(tree, "x/y"), filepath.Join(tree, "etc/y2"))
		fuzzXattrs(tree, 8, 233) // 699 bytes: the ext2 has 1 KiB blocks
		a, b, c, img := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c"), filepath.Join(dir, "img")
		imagetest.Ext(t, "ext4", tree, a, 1, "-b", "4096", "-N", "64", "-O", "^has_journal")
		imagetest.Ext(t, "ext2", tree, b, 1, "-b", "1024", "-N", "32")
		imagetest.FAT(t, 12, tree, c, 1)
		fuzzMeta = imagetest.Disk(t, img, "gpt", 8, []imagetest.Part{{Image: a, SizeMiB: 1, Type: "L"}, {Image: b, SizeMiB: 1, Type: "L"}, {Image: c, SizeMiB: 1, Type: "U"}})
		fuzzImg, err = os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
	})
	if fuzzImg == nil {
		t.Fatal("no fuzz base image")
	}
	return fuzzImg
}

// fuzzXattrs gives the fuzz trees extended attributes (where setfattr
// is installed): n short user.* ones on etc/hosts (XFS: a leaf block),
// an ACL and a value of 3×abc bytes (an ext4 xattr block; at 3,498, an
// XFS remote value).
func fuzzXattrs(tree string, n, abc int) {
	if _, err := exec.LookPath("setfattr"); err != nil {
		return
	}
	for i := range n {
		exec.Command("setfattr", "-n", fmt.Sprintf("user.a%02d", i), "-v", "value", filepath.Join(tree, "etc/hosts")).Run()
	}
	exec.Command("setfattr", "-n", "system.posix_acl_access", "-v",
		"0x0200000001000600ffffffff020004003930000004000400ffffffff10000400ffffffff20000400ffffffff", filepath.Join(tree, "ln")).Run()
	big := filepath.Join(tree, "big")
	os.WriteFile(big, nil, 0o644)
	exec.Command("setfattr", "-n", "user.big", "-v", "0s"+strings.Repeat("QUJD", abc), big).Run()
}

// patch applies patches: each is offset u32 (taken modulo the image),
// length u8, then that many bytes.
func patch(base, patches []byte) []byte {
	img := bytes.Clone(base)
	for len(patches) >= 5 {
		off := int(binary.LittleEndian.Uint32(patches)) % len(img)
		n := min(int(patches[4]), len(patches)-5)
		copy(img[off:], patches[5:5+n])
		patches = patches[5+n:]
	}
	return img
}

// seedPatch is one patch at off.
func seedPatch(off int64, b ...byte) []byte {
	p := binary.LittleEndian.AppendUint32(nil, uint32(off))
	return append(append(p, byte(len(b))), b...)
}

// exercise opens the image and walks everything it finds, reading the
// start of each file, with a bound on the work.
func exercise(t *testing.T, img []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Open(ctx, bytes.NewReader(img), int64(len(img)), time.Unix(0, 0))
	if err != nil {
		return
	}
	visited := 0
	buf := make([]byte, 64<<10)
	p.Walk(ctx, "", p.Root(), func(rel string, r Ref, n Node) error {
		if visited++; visited > 2000 {
			return io.EOF
		}
		switch {
		case n.IsRegular():
			if f, err := p.Open(ctx, r); err == nil {
				f.ReadAt(buf, 0)
				f.Extents(ctx)
			}
		case n.IsSymlink():
			p.Readlink(ctx, r)
		}
		p.Xattrs(ctx, r)
		return nil
	}, nil)
	if ctx.Err() != nil {
		t.Fatalf("the walk of a patched image took over 20 s")
	}
	p.Lookup(ctx, "/part1/ln/x")
	if len(p.Volumes) > 0 {
		p.WriteTar(ctx, &limitWriter{n: 1 << 20}, "x", Ref{Vol: p.Volumes[0]})
	}
}

func FuzzPoint(f *testing.F) {
	base := fuzzBase(f)
	f.Add([]byte{})
	for _, off := range fuzzMeta {
		f.Add(seedPatch(off+1024+0x18, 9))                      // ext block size
		f.Add(seedPatch(off+1024+0x28, 0xff, 0xff, 0xff, 0x7f)) // inodes per group
		f.Add(seedPatch(off+2048, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		f.Add(seedPatch(off+13, 0))    // FAT sectors per cluster
		f.Add(seedPatch(off+0x800, 3)) // FAT entries
	}
	f.Add(seedPatch(512+80, 0xff, 0xff)) // GPT entry count
	f.Fuzz(func(t *testing.T, patches []byte) {
		exercise(t, patch(base, patches))
	})
}

// FuzzPartitions feeds raw bytes (a first few sectors) to the partition
// table reader.
func FuzzPartitions(f *testing.F) {
	base := fuzzBase(f)
	f.Add(base[:34*512])
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xAA
	copy(mbr[446:], []byte{0, 0, 0, 0, 0x05, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0}) // an extended partition at sector 2
	copy(mbr[1024+446:], []byte{0, 0, 0, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 1})
	mbr[1024+510], mbr[1024+511] = 0x55, 0xAA
	f.Add(mbr)
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadPartitions(bytes.NewReader(b), int64(len(b)))
	})
}

// FuzzLVMText feeds the LVM2 metadata text parser and layout.
func FuzzLVMText(f *testing.F) {
	f.Add("vg { extent_size = 8192\nphysical_volumes { pv0 { id = \"a-b\"\npe_start = 2048 } }\n" +
		"logical_volumes { lv { segment1 { start_extent = 0\nextent_count = 2\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0] } } } }\ncontents = \"x\" # c\n")
	f.Add(imagetest.LVMText())
	f.Fuzz(func(t *testing.T, s string) {
		if root, err := parseLVMText(s); err == nil {
			lvmLayout(root)
		}
	})
}

// TestFuzzBase checks that the fuzzers' base image holds what they are
// meant to mutate: three readable filesystems.
func TestFuzzBase(t *testing.T) {
	img := fuzzBase(t)
	p, err := Open(context.Background(), bytes.NewReader(img), int64(len(img)), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"ext4", "ext2", "vfat (FAT12)"} {
		if v := p.Volumes[i]; v.FS == nil || v.FS.Type() != want {
			t.Errorf("volume %d: %s %v, want %s", i, v.Desc, v.Err, want)
		}
	}
	if _, err := p.Lookup(context.Background(), "/part2/ln/x"); err == nil {
		t.Error("a file under a symlink to a file")
	}
	if _, err := exec.LookPath("setfattr"); err == nil {
		for _, path := range []string{"/part1/etc/hosts", "/part2/etc/hosts"} {
			r, err := p.Lookup(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if xs, err := p.Xattrs(context.Background(), r); err != nil || len(xs) != 9 {
				t.Errorf("%s: %d attributes, %v; want 8 and an ACL", path, len(xs), err)
			}
		}
	}
}

// limitWriter fails once n bytes have been written.
type limitWriter struct{ n int }

func (w *limitWriter) Write(b []byte) (int, error) {
	if w.n -= len(b); w.n < 0 {
		return 0, io.ErrShortWrite
	}
	return len(b), nil
}

// FuzzJournal patches a crash-consistent ext4 image (a journal with
// committed transactions to replay, made by the kernel) and opens and
// walks it: the journal replay reads untrusted bytes too.
func FuzzJournal(f *testing.F) {
	dir := f.TempDir()
	base, err := os.ReadFile(crashConsistentExt4(f, dir))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	jsb := bytes.Index(base, []byte{0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 4}) // the journal superblock
	if jsb < 0 {
		f.Fatal("no journal superblock in the base image")
	}
	f.Add(seedPatch(int64(jsb+0x1C), 0, 0, 0, 0xff))          // start
	f.Add(seedPatch(int64(jsb+0x10), 0xff, 0xff, 0xff, 0xff)) // maxlen
	f.Add(seedPatch(int64(jsb+4096+12), 0xff, 0xff))          // the first descriptor's tags
	f.Fuzz(func(t *testing.T, patches []byte) {
		exercise(t, patch(base, patches))
	})
}

// FuzzXFS patches a 16 MiB XFS image written by the kernel (short-form,
// block and leaf directories, an extent B+tree, local and remote
// symlinks) and opens and walks it. The seeds hit the superblock's
// geometry, the root inode's core and forks, and directory blocks.
func FuzzXFS(f *testing.F) {
	dir := f.TempDir()
	tree, img := filepath.Join(dir, "tree"), filepath.Join(dir, "xfs.img")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	os.Symlink("etc/hosts", filepath.Join(tree, "ln"))
	os.Symlink(strings.Repeat("long/", 150), filepath.Join(tree, "remote"))
	for _, n := range []int{60, 400} {
		d := filepath.Join(tree, fmt.Sprint("d", n))
		os.MkdirAll(d, 0o755)
		for i := range n {
			os.WriteFile(filepath.Join(d, fmt.Sprintf("name-%05d", i)), []byte{byte(i)}, 0o644)
		}
	}
	fuzzXattrs(tree, 40, 1166)
	holes := filepath.Join(tree, "holes")
	hf, _ := os.Create(holes)
	for off := int64(0); off < 1<<20; off += 8192 {
		hf.WriteAt([]byte("x"), off)
	}
	hf.Close()
	imagetest.XFS(f, tree, img, "", 16)
	base, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	p, err := Open(context.Background(), bytes.NewReader(base), int64(len(base)), time.Unix(0, 0))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range []string{"/disk/d400/name-00399", "/disk/remote", "/disk/ln"} {
		if _, err := p.Lookup(context.Background(), path); err != nil {
			f.Fatalf("the base image: %s: %v", path, err)
		}
	}
	f.Add([]byte{})
	for _, off := range []int64{4, 84, 88, 104, 120, 123, 124, 192} { // block size, AG geometry, inode size and logs, dir block log
		f.Add(seedPatch(off, 0xff))
	}
	if root := bytes.Index(base, []byte{'I', 'N', 0x41, 0xED, 3}); root >= 0 { // the root directory's inode
		f.Add(seedPatch(int64(root+5), 3))            // format: B+tree
		f.Add(seedPatch(int64(root+82), 0xff))        // fork offset
		f.Add(seedPatch(int64(root+176), 0xff, 0xff)) // short-form count
	}
	if db := bytes.Index(base, []byte("XDD3")); db >= 0 {
		f.Add(seedPatch(int64(db+64+8), 0xff)) // an entry's name length
	}
	if lf := bytes.Index(base, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x3B, 0xEE}); lf >= 0 { // an attribute leaf
		f.Add(seedPatch(int64(lf+56), 0xff, 0xff)) // its entry count
		f.Add(seedPatch(int64(lf+80+4), 0xff))     // the first entry's name offset
	}
	if rm := bytes.Index(base, []byte("XARM")); rm >= 0 {
		f.Add(seedPatch(int64(rm+8), 0xff)) // a remote value block's byte count
	}
	if bm := bytes.Index(base, []byte("BMA3")); bm >= 0 {
		f.Add(seedPatch(int64(bm+6), 0xff, 0xff)) // a B+tree block's record count
	}
	f.Fuzz(func(t *testing.T, patches []byte) {
		exercise(t, patch(base, patches))
	})
}

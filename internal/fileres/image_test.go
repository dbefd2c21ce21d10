package fileres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// testDisk is a GPT disk built once per test binary: part1 ext4 (the
// guest-like tree), part2 FAT32, part3 an LVM2 PV whose logical volume
// holds ext2 (block maps), part4 xfs (refused by name).
type testDisk struct {
	img, tree, fatTree string
	err                error
}

var (
	diskOnce sync.Once
	disk     testDisk
)

func buildDisk(t *testing.T) testDisk {
	t.Helper()
	imagetest.NeedTools(t, "mkfs.ext4", "mkfs.ext2", "mkfs.vfat", "mcopy", "sfdisk", "mkfs.xfs", "dd")
	diskOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fileres")
		if err != nil {
			disk.err = err
			return
		}
		disk = BuildTestDisk(t, dir, 300)
	})
	if disk.img == "" {
		t.Fatal("test disk not built")
	}
	return disk
}

// BuildTestDisk makes the test disk in dir.
func BuildTestDisk(t testing.TB, dir string, many int) testDisk {
	d := testDisk{tree: filepath.Join(dir, "tree"), fatTree: filepath.Join(dir, "fat"), img: filepath.Join(dir, "disk.img")}
	imagetest.Tree(t, d.tree, many)
	imagetest.FATTree(t, d.fatTree)
	ext4, fat, ext2, xfs := filepath.Join(dir, "p1.img"), filepath.Join(dir, "p2.img"), filepath.Join(dir, "lv.img"), filepath.Join(dir, "p4.img")
	imagetest.Ext(t, "ext4", d.tree, ext4, 64)
	imagetest.FAT(t, 32, d.fatTree, fat, 40)
	imagetest.Ext(t, "ext2", d.tree, ext2, 32, "-b", "1024")
	os.WriteFile(xfs, nil, 0o644)
	os.Truncate(xfs, 300<<20)
	imagetest.Run(t, nil, "mkfs.xfs", "-q", "-f", xfs)
	offs := imagetest.Disk(t, d.img, "gpt", 480, []imagetest.Part{{Image: ext4, SizeMiB: 64, Type: "L"}, {Image: fat, SizeMiB: 40, Type: "U"},
		{SizeMiB: 48, Type: "V"}, {Image: xfs, SizeMiB: 300, Type: "L"}})
	imagetest.LVM(t, d.img, offs[2], 48, "bwtest", ext2)
	for _, p := range []string{ext4, fat, ext2, xfs} {
		os.Remove(p)
	}
	return d
}

func openTestPoint(t *testing.T, img string) *Point {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	p, err := Open(context.Background(), f, fi.Size(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVolumes(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.img)
	if p.Table != "gpt" || len(p.Volumes) != 4 {
		t.Fatalf("table %q, %d volumes", p.Table, len(p.Volumes))
	}
	want := []struct{ name, fs string }{{"part1", "ext4"}, {"part2", "vfat (FAT32)"}, {"part3", ""}, {"part4", ""}}
	for i, w := range want {
		v := p.Volumes[i]
		if v.Name != w.name || (w.fs != "" && (v.FS == nil || v.FS.Type() != w.fs)) {
			t.Errorf("volume %d: %s %s %v", i, v.Name, v.Desc, v.Err)
		}
	}
	lv := p.Volumes[2].Sub
	if len(lv) != 1 || lv[0].Name != "bwtest-root" || lv[0].FS == nil || lv[0].FS.Type() != "ext2" {
		t.Fatalf("LVM: %+v %v", lv, p.Volumes[2].Err)
	}
	var ve *VolumeError
	if err := p.Volumes[3].Err; !errors.As(err, &ve) || ve.Volume != "part4" || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("xfs partition: %v", err)
	}
	if _, err := p.ReadDir(context.Background(), Ref{Vol: p.Volumes[3]}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("listing xfs: %v", err)
	}
}

func TestRestoreTree(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.img)
	ctx := context.Background()
	for _, c := range []struct {
		path, src string
		o         imagetest.CompareOptions
	}{
		{"/part1", d.tree, imagetest.CompareOptions{Sparse: true, TimeStep: 1e9}}, // mkfs -d keeps seconds,
		{"/part3/bwtest-root", d.tree, imagetest.CompareOptions{Sparse: true, TimeStep: 1e9}}, // mkfs -d keeps seconds,
		{"/part2", d.fatTree, imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9}},
	} {
		t.Run(c.path, func(t *testing.T) {
			out := t.TempDir()
			st, err := p.Restore(ctx, []string{c.path}, out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", st)
			imagetest.CompareTree(t, c.src, filepath.Join(out, c.path), c.o)
		})
	}
}

func TestLookup(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.img)
	ctx := context.Background()
	for _, c := range []struct {
		path string
		err  error
	}{
		{"/part1/etc/hosts", nil},
		{"/part1/link-abs/sites-enabled/default", nil}, // through an absolute symlink
		{"/part1/../etc", ErrEscape},
		{"/part1/etc/nope", ErrNotFound},
		{"/part1/etc/hosts/x", ErrNotDir},
		{"/part9", ErrNotFound},
		{"/part4/x", ErrUnsupported},
		{"/part2/a long file name document.txt", ErrNotFound},
		{"/part2/A Long File Name Document.txt", nil},
	} {
		_, err := p.Lookup(ctx, c.path)
		if (c.err == nil) != (err == nil) || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.path, err, c.err)
		}
	}
}

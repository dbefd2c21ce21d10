package fileres

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// An MBR disk made by sfdisk: a primary FAT16 partition, then an
// extended partition with ext3 (journal, block maps, 4 KiB blocks) and
// ext4 as logical partitions 5 and 6; and an ext4 filesystem on a whole
// disk without a partition table ("disk"). Nanosecond times set with
// debugfs come back exact.
func TestMBRAndWholeDisk(t *testing.T) {
	imagetest.NeedTools(t, "mkfs.ext4", "mkfs.ext3", "mkfs.vfat", "mcopy", "sfdisk", "debugfs")
	dir := t.TempDir()
	tree, fat := filepath.Join(dir, "tree"), filepath.Join(dir, "fat")
	imagetest.Tree(t, tree, 20)
	imagetest.FATTree(t, fat)
	p1, p5, p6, img := filepath.Join(dir, "p1"), filepath.Join(dir, "p5"), filepath.Join(dir, "p6"), filepath.Join(dir, "mbr.img")
	imagetest.FAT(t, 16, fat, p1, 20)
	imagetest.Ext(t, "ext3", tree, p5, 24, "-b", "4096")
	imagetest.Ext(t, "ext4", tree, p6, 24)
	imagetest.Run(t, nil, "debugfs", "-w", "-R", "sif /etc/hosts mtime_extra 0x1D6F3454", p6) // 123456789 ns << 2 | epoch 0
	imagetest.Disk(t, img, "dos", 80, []imagetest.Part{{Image: p1, SizeMiB: 20, Type: "6"}, {Image: p5, SizeMiB: 24, Type: "L"}, {Image: p6, SizeMiB: 24, Type: "L"}})
	p := openTestPoint(t, img)
	ctx := context.Background()
	if p.Table != "mbr" || len(p.Volumes) != 3 {
		t.Fatalf("table %q, %d volumes", p.Table, len(p.Volumes))
	}
	for i, w := range []struct{ name, fs string }{{"part1", "vfat (FAT16)"}, {"part5", "ext3"}, {"part6", "ext4"}} {
		if v := p.Volumes[i]; v.Name != w.name || v.FS == nil || v.FS.Type() != w.fs {
			t.Errorf("volume %d: %s %s %v, want %s %s", i, v.Name, v.Desc, v.Err, w.name, w.fs)
		}
	}
	out := t.TempDir()
	if _, err := p.Restore(ctx, []string{"/part1", "/part5", "/part6/etc"}, out); err != nil {
		t.Fatal(err)
	}
	imagetest.CompareTree(t, fat, filepath.Join(out, "part1"), imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9})
	imagetest.CompareTree(t, tree, filepath.Join(out, "part5"), imagetest.CompareOptions{TimeStep: 1e9, Sparse: true})
	ref, err := p.Lookup(ctx, "/part6/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := p.Stat(ctx, ref)
	if n.Mtime.Nanosecond() != 123456789 {
		t.Errorf("mtime %v: nanoseconds %d, want 123456789", n.Mtime, n.Mtime.Nanosecond())
	}
	if fi, err := os.Stat(filepath.Join(out, "part6/etc/hosts")); err != nil || !fi.ModTime().Equal(n.Mtime) {
		t.Errorf("restored mtime %v, want %v (%v)", fi.ModTime(), n.Mtime, err)
	}

	whole := openTestPoint(t, p6)
	if whole.Table != "" || len(whole.Volumes) != 1 || whole.Volumes[0].Name != "disk" || whole.Volumes[0].FS == nil {
		t.Fatalf("whole-disk filesystem: %+v", whole.Volumes)
	}
	if _, err := whole.Lookup(ctx, "/disk/etc/nginx/sites-enabled/default"); err != nil {
		t.Fatal(err)
	}
}

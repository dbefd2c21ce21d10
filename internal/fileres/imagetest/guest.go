package imagetest

import (
	"os"
	"path/filepath"
	"testing"
)

// GuestDisk is a GPT disk image as a guest might have it: part1 ext4 with
// Tree, part2 FAT32 with FATTree, part3 an LVM2 physical volume whose
// logical volume bwtest-root holds ext2 with 1 KiB blocks (block maps
// and indirect blocks, not extents) with Tree, part4 Linux swap (which
// the reader names and refuses: there are no files in it).
type GuestDisk struct {
	Img, Tree, FATTree string
	Offsets            []int64 // of the partitions
}

// GuestDiskMiB is the size of a GuestDisk.
const GuestDiskMiB = 480

// BuildGuestDisk makes a GuestDisk in dir; many is the number of files
// in the tree's large directory.
func BuildGuestDisk(t testing.TB, dir string, many int) GuestDisk {
	t.Helper()
	NeedTools(t, "mkfs.ext4", "mkfs.ext2", "mkfs.vfat", "mcopy", "sfdisk", "mkswap", "dd")
	d := GuestDisk{Tree: filepath.Join(dir, "tree"), FATTree: filepath.Join(dir, "fat"), Img: filepath.Join(dir, "disk.img")}
	Tree(t, d.Tree, many)
	FATTree(t, d.FATTree)
	fat, ext2, swap := filepath.Join(dir, "p2.img"), filepath.Join(dir, "lv.img"), filepath.Join(dir, "p4.img")
	FAT(t, 32, d.FATTree, fat, 40)
	Ext(t, "ext2", d.Tree, ext2, 32, "-b", "1024")
	must(t, os.WriteFile(swap, nil, 0o644))
	must(t, os.Truncate(swap, 300<<20))
	Run(t, nil, "mkswap", swap)
	d.Offsets = Disk(t, d.Img, "gpt", GuestDiskMiB, []Part{{SizeMiB: 64, Type: "L"}, {Image: fat, SizeMiB: 40, Type: "U"},
		{SizeMiB: 48, Type: "V"}, {Image: swap, SizeMiB: 300, Type: "S"}})
	d.PutExt4(t, d.Tree)
	LVM(t, d.Img, d.Offsets[2], 48, "bwtest", ext2)
	for _, p := range []string{fat, ext2, swap} {
		os.Remove(p)
	}
	return d
}

// PutExt4 (re)makes part1's ext4 filesystem from tree.
func (d GuestDisk) PutExt4(t testing.TB, tree string) {
	t.Helper()
	img := d.Img + ".p1"
	Ext(t, "ext4", tree, img, 64)
	Place(t, img, d.Img, d.Offsets[0])
	os.Remove(img)
}

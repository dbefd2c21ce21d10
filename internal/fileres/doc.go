// Package fileres is file-level restore: it reads the partitions,
// logical volumes and filesystems of a restore point's disk image
// straight from the repository, for ls, dump, restore --include, mount
// and the API's file routes, without restoring the image first.
//
// Vocabulary:
//
//   - Source: an io.ReaderAt over a point's image (repo.Image) with a
//     shared cache of decoded chunks and read-ahead; every chunk is
//     verified against its ID as restore does.
//   - Volume: a partition (part1, part2... as Linux numbers them, logical
//     MBR partitions from part5), the whole disk ("disk") when there is no
//     partition table, or an LVM2 logical volume (VG-LV, listed under its
//     physical volume's partition). A volume holds an FS or an Err (a
//     *VolumeError naming the volume and what was found there).
//   - FS: a read-only filesystem reader (ext2/3/4, XFS, FAT12/16/32) that
//     treats every byte as untrusted: ranges are checked, allocations and
//     walks bounded, loops refused (docs/fileres.md, invariants F1–F6).
//     ext and XFS also list extended attributes (XattrFS, X1–X4), which
//     restore, dump's tar and mount reproduce.
//   - Point: the tree of one image: the volumes on top, their
//     filesystems beneath; paths look like /part1/etc/hosts. Ref names a
//     place in it (a volume's inode, or a directory above the
//     filesystems).
//   - Session: a Point opened from a repository under a shared lock, so a
//     prune cannot remove the packs being read.
//
// Restore writes through an os.Root, so nothing lands outside its target
// directory whatever names or symlinks the image holds; ".." in a path
// given by a user is refused (ErrEscape).
package fileres

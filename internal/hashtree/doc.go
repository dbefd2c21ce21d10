// Package hashtree is the Merkle tree over a disk image that lets a backup
// prove a restore point equals the disk it came from (docs/format.md,
// "Hash tree"). It knows no files, disks or repositories: the engine
// feeds it leaf hashes of the blocks CBT marked, the backup feeds it the
// leaves of the blocks it read over its parent point's leaves, and both
// compare roots.
//
// Vocabulary:
//   - block: the leaf unit, BlockSize bytes (the CBT granularity, 64 KiB
//     by default). The last block of an image whose size is not a
//     multiple of BlockSize is hashed zero-padded to a whole block.
//   - leaf: BLAKE3-256(0x00 || block) (H1). A hole reads as zeroes and
//     hashes as a zero block, so a thin disk and its raw copy agree.
//   - node: BLAKE3-256(0x01 || left || right) (H2). The tree is left
//     balanced (RFC 6962's shape): built bottom up, a level's last node
//     without a sibling is carried up unchanged.
//   - top: the single node left at the top; the all-zero hash for an
//     image of no blocks.
//   - root: BLAKE3-256(0x02 || "blockwise-hashtree-v1" || le64 size ||
//     le32 BlockSize || top) (H3): it names the image, its size and the
//     block size together.
//   - page: PageLeaves (1024) consecutive leaves, the unit of storage,
//     copy-on-write sharing between trees, and incremental updates. A
//     page with only zero leaves is not stored.
//   - data leaf: a leaf that is not the zero-block leaf. A SparseLeaves
//     run (a repository point's tree group) keeps its data leaves alone;
//     every other leaf is the zero-block leaf.
package hashtree

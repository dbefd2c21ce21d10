package fileres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// XFS reader (v4 and v5 with CRCs, as mkfs.xfs makes them): superblock,
// inodes found directly from their numbers (AG, block, slot: no inode
// B+tree walk is needed to read a known inode), data forks in local,
// extent and B+tree format, short-form, block, leaf and node directories
// (their data blocks hold every name; the hash leaves and free indexes
// are not needed to list them), local and remote symlinks. Every field is
// big-endian. docs/fileres.md lists what is read and what is refused;
// checksums are not verified (the chunks beneath are, F6).

const (
	xfsVersionMask   = 0xF
	xfsV2Ftype       = 0x200 // v4 features2: file type in directory entries
	xfsIncompatFtype = 0x1
	xfsIncompatKnown = 0xFF // ftype, sparse inodes, meta uuid, bigtime, needsrepair, nrext64, exchange range, parent pointers

	xfsDinodeMagic  = 0x494E // "IN"
	xfsFmtDev       = 0
	xfsFmtLocal     = 1
	xfsFmtExtents   = 2
	xfsFmtBtree     = 3
	xfsFlagRealtime = 0x1
	xfsFlag2Bigtime = 0x8
	xfsFlag2NRext64 = 0x10

	xfsDirLeafOffset = 32 << 30 // directory leaf blocks start here: data blocks lie below
	xfsMaxBtreeLevel = 9
	xfsSymlinkHdr    = 56 // v5 remote symlink block header
)

type xfsFS struct {
	r            io.ReaderAt
	size         int64
	bs           int64
	dirbs        int64 // directory block size
	isz          int64
	agblocks     int64
	agcount      int64
	agblklog     uint
	inopblog     uint
	v5, ftype    bool
	rootino      uint64
	dblocks      int64
	needsRepair  bool
	realtimeDisk bool
}

// openXFS reads an XFS superblock at the start of r.
func openXFS(r io.ReaderAt, size int64) (*xfsFS, error) {
	sb := make([]byte, 512)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return nil, damaged("xfs: superblock unreadable: %v", err)
	}
	be := binary.BigEndian
	if string(sb[0:4]) != "XFSB" {
		return nil, damaged("xfs: bad superblock magic")
	}
	f := &xfsFS{r: r, size: size, bs: int64(be.Uint32(sb[4:])), dblocks: int64(be.Uint64(sb[8:])),
		rootino: be.Uint64(sb[56:]), agblocks: int64(be.Uint32(sb[84:])), agcount: int64(be.Uint32(sb[88:])),
		isz: int64(be.Uint16(sb[104:])), agblklog: uint(sb[124]), inopblog: uint(sb[123])}
	f.realtimeDisk = be.Uint64(sb[16:]) != 0
	switch v := be.Uint16(sb[100:]) & xfsVersionMask; v {
	case 5:
		f.v5 = true
		inc := be.Uint32(sb[216:])
		if inc&^xfsIncompatKnown != 0 {
			return nil, unsupported("xfs: incompatible features 0x%x", inc&^xfsIncompatKnown)
		}
		f.ftype, f.needsRepair = inc&xfsIncompatFtype != 0, inc&0x10 != 0
	case 4:
		f.ftype = be.Uint32(sb[200:])&xfsV2Ftype != 0
	default:
		return nil, unsupported("xfs: superblock version %d", v)
	}
	if err := f.checkGeometry(sb); err != nil {
		return nil, err
	}
	root, err := f.Stat(context.Background(), f.rootino)
	if err != nil {
		return nil, err
	}
	if !root.IsDir() {
		return nil, damaged("xfs: root inode %d has mode %o, not a directory's", f.rootino, root.Mode)
	}
	return f, nil
}

// checkGeometry checks the superblock's sizes against each other and the
// volume (F1), so inode and block numbers can be checked later.
func (f *xfsFS) checkGeometry(sb []byte) error {
	blocklog, inodelog, dirblklog := uint(sb[120]), uint(sb[122]), uint(sb[192])
	switch {
	case blocklog < 9 || blocklog > 16 || f.bs != 1<<blocklog:
		return damaged("xfs: block size %d (log %d)", f.bs, blocklog)
	case inodelog < 8 || inodelog > 11 || f.isz != 1<<inodelog || f.isz > f.bs:
		return damaged("xfs: inode size %d (log %d)", f.isz, inodelog)
	case f.inopblog != blocklog-inodelog:
		return damaged("xfs: %d inodes per block (log), want %d", f.inopblog, blocklog-inodelog)
	case dirblklog > 16-blocklog:
		return damaged("xfs: directory blocks of 2^%d filesystem blocks", dirblklog)
	case f.agblocks < 16 || f.agcount < 1 || f.agblklog > 31 || int64(1)<<f.agblklog < f.agblocks || int64(1)<<f.agblklog >= 2*f.agblocks:
		return damaged("xfs: %d allocation groups of %d blocks (log %d)", f.agcount, f.agblocks, f.agblklog)
	case f.dblocks <= 0 || f.dblocks > f.agcount*f.agblocks || f.dblocks > f.size/f.bs:
		return damaged("xfs: %d blocks of %d bytes do not fit the %d-byte volume", f.dblocks, f.bs, f.size)
	}
	f.dirbs = f.bs << dirblklog
	return nil
}

// Type implements FS.
func (f *xfsFS) Type() string {
	t := "xfs v4"
	if f.v5 {
		t = "xfs v5"
	}
	if f.needsRepair {
		t += " (needs repair)"
	}
	return t
}

// Root implements FS.
func (f *xfsFS) Root() uint64 { return f.rootino }

// readAt reads n bytes at off, refusing ranges outside the volume (F1).
func (f *xfsFS) readAt(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > f.size || n > f.size-off {
		return nil, damaged("xfs: read of %d bytes at %d beyond the %d-byte volume", n, off, f.size)
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// fsblock turns a filesystem block number (AG number in the high bits)
// of an n-block stretch into a block of the volume, checking that the
// stretch lies in its AG and the volume (F1).
func (f *xfsFS) fsblock(fsb uint64, n int64) (int64, error) {
	ag, agbno := int64(fsb>>f.agblklog), int64(fsb&(1<<f.agblklog-1))
	if fsb>>f.agblklog >= uint64(f.agcount) || agbno+n > f.agblocks || ag*f.agblocks+agbno+n > f.dblocks {
		return 0, damaged("xfs: block %d+%d outside the filesystem", fsb, n)
	}
	return ag*f.agblocks + agbno, nil
}

// inode reads inode ino: its number says where it is (AG, block in the
// AG, slot in the block). Its magic, version and (v5) own number must match.
func (f *xfsFS) inode(ino uint64) ([]byte, error) {
	agbno := ino >> f.inopblog
	blk, err := f.fsblock(agbno, 1)
	if err != nil || ino == 0 {
		return nil, damaged("xfs: inode %d out of range", ino)
	}
	b, err := f.readAt(blk*f.bs+int64(ino&(1<<f.inopblog-1))*f.isz, f.isz)
	if err != nil {
		return nil, err
	}
	be := binary.BigEndian
	v := b[4]
	switch {
	case be.Uint16(b) != xfsDinodeMagic:
		return nil, damaged("xfs: inode %d: bad magic", ino)
	case v < 1 || v > 3 || f.v5 != (v == 3):
		return nil, damaged("xfs: inode %d: version %d", ino, v)
	case v == 3 && be.Uint64(b[152:]) != ino:
		return nil, damaged("xfs: inode %d says it is inode %d", ino, be.Uint64(b[152:]))
	}
	return b, nil
}

// dataFork returns the inode's data fork: after the core (100 bytes, 176
// for v3) up to the attribute fork (forkoff×8 bytes in) or the inode's end.
func (f *xfsFS) dataFork(ino uint64, b []byte) ([]byte, error) {
	lit := int64(100)
	if b[4] == 3 {
		lit = 176
	}
	end := f.isz
	if off := int64(b[82]) * 8; off != 0 {
		if lit+off > f.isz {
			return nil, damaged("xfs: inode %d: attribute fork at %d", ino, off)
		}
		end = lit + off
	}
	return b[lit:end], nil
}

func xfsTime(b []byte, big bool) time.Time {
	be := binary.BigEndian
	if big { // nanoseconds since the old 32-bit epoch's start
		ns := be.Uint64(b)
		return time.Unix(int64(ns/1e9)-1<<31, int64(ns%1e9))
	}
	return time.Unix(int64(int32(be.Uint32(b))), int64(be.Uint32(b[4:])%1e9))
}

// Stat implements FS.
func (f *xfsFS) Stat(_ context.Context, ino uint64) (Node, error) {
	b, err := f.inode(ino)
	if err != nil {
		return Node{}, err
	}
	return f.node(ino, b)
}

func (f *xfsFS) node(ino uint64, b []byte) (Node, error) {
	be := binary.BigEndian
	n := Node{Ino: ino, Mode: uint32(be.Uint16(b[2:])), Uid: be.Uint32(b[8:]), Gid: be.Uint32(b[12:]), Size: int64(be.Uint64(b[56:]))}
	n.Nlink = be.Uint32(b[16:])
	if b[4] == 1 {
		n.Nlink = uint32(be.Uint16(b[6:]))
	}
	if n.Size < 0 {
		n.Size = 0 // a damaged size: the reader refuses its blocks
	}
	big := b[4] == 3 && be.Uint64(b[120:])&xfsFlag2Bigtime != 0
	n.Atime, n.Mtime, n.Ctime = xfsTime(b[32:], big), xfsTime(b[40:], big), xfsTime(b[48:], big)
	if t := n.Mode & ModeType; t == ModeChar || t == ModeBlock {
		fork, err := f.dataFork(ino, b)
		if err != nil || len(fork) < 4 {
			return n, damaged("xfs: device inode %d without its number", ino)
		}
		d := be.Uint32(fork) // major in the high 14 bits, minor in the low 18
		n.Rdev = unix.Mkdev(d>>18, d&0x3FFFF)
	}
	return n, nil
}

// nextents is the data fork's extent count (64-bit with nrext64).
func (f *xfsFS) nextents(b []byte) uint64 {
	be := binary.BigEndian
	if b[4] == 3 && be.Uint64(b[120:])&xfsFlag2NRext64 != 0 {
		return be.Uint64(b[24:])
	}
	return uint64(be.Uint32(b[76:]))
}

// file maps the data fork (extents or B+tree) of inode ino.
func (f *xfsFS) file(ino uint64, b []byte) (*extFile, error) {
	n, err := f.node(ino, b)
	if err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint16(b[90:])&xfsFlagRealtime != 0 {
		return nil, unsupported("xfs: inode %d keeps its data on the realtime device", ino)
	}
	fork, err := f.dataFork(ino, b)
	if err != nil {
		return nil, err
	}
	file := &extFile{r: f.r, bs: f.bs, size: n.Size}
	switch b[5] {
	case xfsFmtExtents:
		cnt := f.nextents(b)
		if cnt > uint64(len(fork)/16) {
			return nil, damaged("xfs: inode %d: %d extents in a %d-byte fork", ino, cnt, len(fork))
		}
		err = f.addRecs(ino, fork[:cnt*16], &file.ext)
	case xfsFmtBtree:
		budget := extMaxNodes
		err = f.walkBmapRoot(ino, fork, &budget, &file.ext)
	default:
		err = damaged("xfs: inode %d: data fork format %d for file data", ino, b[5])
	}
	if err != nil {
		return nil, err
	}
	return file, nil
}

// addRecs appends packed extent records (128 bits: unwritten flag, 54-bit
// file offset, 52-bit block, 21-bit length); unwritten extents read as
// holes. Records must be in order and not overlap, ≤ extMaxExtents (F2).
func (f *xfsFS) addRecs(ino uint64, recs []byte, out *[]extExtent) error {
	be := binary.BigEndian
	for i := 0; i+16 <= len(recs); i += 16 {
		l0, l1 := be.Uint64(recs[i:]), be.Uint64(recs[i+8:])
		x := extExtent{lblk: int64(l0 & (1<<63 - 1) >> 9), n: int64(l1 & (1<<21 - 1))}
		if l0>>63 != 0 || x.n == 0 {
			continue
		}
		var err error
		if x.pblk, err = f.fsblock(l0&0x1FF<<43|l1>>21, x.n); err != nil {
			return fmt.Errorf("xfs: inode %d: %w", ino, err)
		}
		if k := len(*out); k > 0 && (*out)[k-1].lblk+(*out)[k-1].n > x.lblk || k >= extMaxExtents {
			return damaged("xfs: inode %d: extents overlap, are out of order or over %d", ino, extMaxExtents)
		}
		*out = append(*out, x)
	}
	return nil
}

// walkBmapRoot walks the B+tree whose root is in the inode's fork: level,
// record count, then keys and child pointers, the pointers placed after
// room for as many keys as the fork could hold.
func (f *xfsFS) walkBmapRoot(ino uint64, fork []byte, budget *int, out *[]extExtent) error {
	be := binary.BigEndian
	if len(fork) < 4 {
		return damaged("xfs: inode %d: B+tree root in a %d-byte fork", ino, len(fork))
	}
	level, n := int(be.Uint16(fork)), int(be.Uint16(fork[2:]))
	max := (len(fork) - 4) / 16
	if level < 1 || level > xfsMaxBtreeLevel || n > max {
		return damaged("xfs: inode %d: B+tree root of level %d with %d records", ino, level, n)
	}
	return f.walkBmapPtrs(ino, fork[4+8*max:], n, level, budget, out)
}

// walkBmapPtrs visits the n children (at level-1) of a B+tree node;
// levels must fall and blocks are counted against budget (F3).
func (f *xfsFS) walkBmapPtrs(ino uint64, ptrs []byte, n, level int, budget *int, out *[]extExtent) error {
	hdr, magic := int64(24), "BMAP"
	if f.v5 {
		hdr, magic = 72, "BMA3"
	}
	for i := range n {
		if *budget--; *budget < 0 {
			return damaged("xfs: inode %d: over %d B+tree blocks", ino, extMaxNodes)
		}
		blk, err := f.fsblock(binary.BigEndian.Uint64(ptrs[8*i:]), 1)
		if err != nil {
			return fmt.Errorf("xfs: inode %d: B+tree pointer: %w", ino, err)
		}
		b, err := f.readAt(blk*f.bs, f.bs)
		if err != nil {
			return err
		}
		cl, cn := int(binary.BigEndian.Uint16(b[4:])), int(binary.BigEndian.Uint16(b[6:]))
		if string(b[:4]) != magic || cl != level-1 {
			return damaged("xfs: inode %d: B+tree block %d: magic %q level %d, want %s level %d", ino, blk, b[:4], cl, magic, level-1)
		}
		max := int((f.bs - hdr) / 16)
		if cn > max {
			return damaged("xfs: inode %d: B+tree block %d with %d records", ino, blk, cn)
		}
		if cl == 0 {
			err = f.addRecs(ino, b[hdr:hdr+16*int64(cn)], out)
		} else {
			err = f.walkBmapPtrs(ino, b[hdr+8*int64(max):], cn, cl, budget, out)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Open implements FS.
func (f *xfsFS) Open(_ context.Context, ino uint64) (File, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	return f.file(ino, b)
}

// Readlink implements FS: a short target is in the inode (local format),
// a longer one in blocks that (v5) start with a 56-byte header.
func (f *xfsFS) Readlink(_ context.Context, ino uint64) (string, error) {
	b, err := f.inode(ino)
	if err != nil {
		return "", err
	}
	n, err := f.node(ino, b)
	if err != nil {
		return "", err
	}
	if !n.IsSymlink() || n.Size > maxSymlink {
		return "", damaged("xfs: inode %d is not a symlink of at most %d bytes", ino, maxSymlink)
	}
	if b[5] == xfsFmtLocal {
		fork, err := f.dataFork(ino, b)
		if err != nil || int64(len(fork)) < n.Size {
			return "", damaged("xfs: symlink inode %d: %d bytes in a %d-byte fork", ino, n.Size, len(fork))
		}
		return string(fork[:n.Size]), nil
	}
	file, err := f.file(ino, b)
	if err != nil {
		return "", err
	}
	return f.remoteSymlink(ino, file, n.Size)
}

// remoteSymlink reads a target kept in blocks: each extent is one buffer
// that (v5) starts with a 56-byte header giving the bytes it holds.
func (f *xfsFS) remoteSymlink(ino uint64, file *extFile, size int64) (string, error) {
	hdr := int64(0)
	if f.v5 {
		hdr = xfsSymlinkHdr
	}
	var out []byte
	for _, e := range file.ext {
		if int64(len(out)) >= size {
			break
		}
		if e.n*f.bs > 2*maxSymlink+f.bs {
			return "", damaged("xfs: symlink inode %d: an extent of %d blocks", ino, e.n)
		}
		blk, err := f.readAt(e.pblk*f.bs, e.n*f.bs)
		if err != nil {
			return "", err
		}
		want := min(size-int64(len(out)), e.n*f.bs-hdr)
		if f.v5 && (string(blk[:4]) != "XSLM" || int64(binary.BigEndian.Uint32(blk[8:])) != want) {
			return "", damaged("xfs: symlink inode %d: bad block header", ino)
		}
		out = append(out, blk[hdr:hdr+want]...)
	}
	if int64(len(out)) != size {
		return "", damaged("xfs: symlink inode %d: %d of %d bytes mapped", ino, len(out), size)
	}
	return string(out), nil
}

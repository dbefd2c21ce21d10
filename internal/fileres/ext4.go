package fileres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// ext2/3/4 reader: superblock, group descriptors, inodes, extent trees and
// block maps, linear directories (hashed directories keep a linear layout
// underneath). docs/fileres.md lists what is read and what is refused.

const (
	extMagic = 0xEF53

	extCompatJournal   = 0x4
	extIncompatFType   = 0x2
	extIncompatRecover = 0x4
	extIncompatExtents = 0x40
	extIncompat64      = 0x80
	extIncompatFlexBG  = 0x200
	extIncompatInline  = 0x8000
	// incompat features that change how files are found and are not read
	extIncompatRefused = 0x1 | 0x8 | 0x10 | 0x1000 // compression, journal device, meta_bg, dirdata
	extIncompatKnown   = 0x3FFFF

	extFlagExtents = 0x80000
	extFlagInline  = 0x10000000
	extFlagEncrypt = 0x800

	extMaxExtents = 1 << 20 // extents one file may have (24 MiB of bookkeeping)
	extMaxNodes   = 1 << 16 // extent tree blocks one file may have
	extMaxDepth   = 5
)

type extFS struct {
	r        io.ReaderAt
	size     int64
	bs       int64
	blocks   int64
	inodes   uint32
	ipg      uint32
	isz      int64
	descSize int64
	gdt      int64 // byte offset of the group descriptor table
	groups   int64
	incompat uint32
	kind     string
	journal  string // what became of a journal that needed recovery
}

// openExt reads an ext2/3/4 superblock at 1024 bytes into r.
func openExt(r io.ReaderAt, size int64) (*extFS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, damaged("ext: superblock unreadable: %v", err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != extMagic {
		return nil, damaged("ext: bad superblock magic")
	}
	le := binary.LittleEndian
	f := &extFS{r: r, size: size, inodes: le.Uint32(sb[0:]), ipg: le.Uint32(sb[0x28:]), incompat: le.Uint32(sb[0x60:])}
	logbs := le.Uint32(sb[0x18:])
	if logbs > 6 {
		return nil, damaged("ext: block size 2^%d KiB", logbs)
	}
	f.bs = 1024 << logbs
	f.blocks = int64(le.Uint32(sb[4:]))
	if f.incompat&extIncompat64 != 0 {
		f.blocks |= int64(le.Uint32(sb[0x150:])) << 32
	}
	if err := f.checkFeatures(); err != nil {
		return nil, err
	}
	f.isz = 128
	if le.Uint32(sb[0x4C:]) >= 1 {
		f.isz = int64(le.Uint16(sb[0x58:]))
	}
	f.descSize = 32
	if f.incompat&extIncompat64 != 0 {
		f.descSize = int64(le.Uint16(sb[0xFE:]))
	}
	bpg := int64(le.Uint32(sb[0x20:]))
	first := int64(le.Uint32(sb[0x14:]))
	switch {
	case f.isz < 128 || f.isz > f.bs || f.isz&(f.isz-1) != 0:
		return nil, damaged("ext: inode size %d", f.isz)
	case f.descSize < 32 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0:
		return nil, damaged("ext: group descriptor size %d", f.descSize)
	case bpg <= 0 || f.ipg == 0 || int64(f.ipg) > 8*f.bs || f.blocks <= first || f.blocks > size/f.bs+1:
		return nil, damaged("ext: geometry (%d blocks of %d bytes, %d per group, %d inodes per group) does not fit a %d-byte volume", f.blocks, f.bs, bpg, f.ipg, size)
	}
	f.groups = (f.blocks - first + bpg - 1) / bpg
	if int64(f.inodes) > f.groups*int64(f.ipg) {
		return nil, damaged("ext: %d inodes in %d groups of %d", f.inodes, f.groups, f.ipg)
	}
	f.gdt = (first + 1) * f.bs
	f.kind = extKind(le.Uint32(sb[0x5C:]), f.incompat)
	root, err := f.inode(2)
	if err != nil {
		return nil, err
	}
	if f.incompat&extIncompatRecover != 0 {
		if err := f.recover(uint64(le.Uint32(sb[0xE0:]))); err != nil {
			return nil, err
		}
		if root, err = f.inode(2); err != nil {
			return nil, err
		}
	}
	if n := f.node(2, root); !n.IsDir() {
		return nil, damaged("ext: root inode has mode %o, not a directory's (inode table damaged?)", n.Mode)
	}
	return f, nil
}

func (f *extFS) checkFeatures() error {
	if bad := f.incompat & (extIncompatRefused | ^uint32(extIncompatKnown)); bad != 0 {
		return unsupported("ext: incompatible features 0x%x (compression, journal device, meta_bg, dirdata or unknown)", bad)
	}
	return nil
}

func extKind(compat, incompat uint32) string {
	switch {
	case incompat&(extIncompatExtents|extIncompat64|extIncompatFlexBG) != 0:
		return "ext4"
	case compat&extCompatJournal != 0:
		return "ext3"
	}
	return "ext2"
}

// Type implements FS: ext2, ext3 or ext4, and whether the journal needed replay.
func (f *extFS) Type() string {
	if f.journal != "" {
		return f.kind + " (" + f.journal + ")"
	}
	return f.kind
}

// recover replays the committed transactions of the journal in inode
// jino over the volume (jbd2.go). A journal on another device, or with
// fast commits, cannot be replayed: the volume is read as it is and its
// type says so.
func (f *extFS) recover(jino uint64) error {
	if jino == 0 {
		f.journal = "journal on another device not replayed: as after a crash"
		return nil
	}
	m, txns, err := f.replayJournal(jino)
	switch {
	case errors.Is(err, ErrUnsupported):
		f.journal = "journal not replayed: " + err.Error()
		return nil
	case err != nil:
		return err
	}
	ib, err := f.inode(jino)
	if err != nil {
		return err
	}
	j, err := f.file(jino, ib)
	if err != nil {
		return err
	}
	f.r = &journalOverlay{r: f.r, j: j, bs: f.bs, m: m}
	f.journal = fmt.Sprintf("journal replayed: %d transactions, %d blocks", txns, len(m))
	return nil
}

// Root implements FS: ext keeps its root directory in inode 2.
func (f *extFS) Root() uint64 { return 2 }

// readAt reads n bytes at off, refusing ranges outside the volume (F1).
func (f *extFS) readAt(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > f.size || n > f.size-off {
		return nil, damaged("ext: read of %d bytes at %d beyond the %d-byte volume", n, off, f.size)
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// inode returns the raw inode ino.
func (f *extFS) inode(ino uint64) ([]byte, error) {
	if ino < 1 || ino > uint64(f.inodes) {
		return nil, damaged("ext: inode %d out of range (1-%d)", ino, f.inodes)
	}
	g, idx := int64(ino-1)/int64(f.ipg), int64(ino-1)%int64(f.ipg)
	d, err := f.readAt(f.gdt+g*f.descSize, f.descSize)
	if err != nil {
		return nil, err
	}
	tbl := int64(binary.LittleEndian.Uint32(d[8:]))
	if f.descSize >= 64 {
		tbl |= int64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	if tbl <= 0 || tbl >= f.blocks {
		return nil, damaged("ext: group %d's inode table at block %d, outside the volume", g, tbl)
	}
	return f.readAt(tbl*f.bs+idx*f.isz, f.isz)
}

func extTime(sec uint32, extra uint32, has bool) time.Time {
	s := int64(int32(sec))
	if !has {
		return time.Unix(s, 0)
	}
	s += int64(extra&3) << 32
	return time.Unix(s, int64(extra>>2)%1e9)
}

// Stat implements FS.
func (f *extFS) Stat(_ context.Context, ino uint64) (Node, error) {
	b, err := f.inode(ino)
	if err != nil {
		return Node{}, err
	}
	return f.node(ino, b), nil
}

func (f *extFS) node(ino uint64, b []byte) Node {
	le := binary.LittleEndian
	n := Node{Ino: ino, Mode: uint32(le.Uint16(b[0:])), Nlink: uint32(le.Uint16(b[0x1A:]))}
	n.Uid = uint32(le.Uint16(b[2:])) | uint32(le.Uint16(b[0x78:]))<<16
	n.Gid = uint32(le.Uint16(b[0x18:])) | uint32(le.Uint16(b[0x7A:]))<<16
	n.Size = int64(le.Uint32(b[4:]))
	n.Size |= int64(le.Uint32(b[0x6C:])) << 32
	if n.Size < 0 {
		n.Size = 0 // a damaged size: the reader refuses its blocks
	}
	extra := int64(0)
	if f.isz > 128 {
		extra = int64(le.Uint16(b[0x80:]))
	}
	field := func(off int64) (uint32, bool) {
		if 0x80+extra >= off+4 && off+4 <= f.isz {
			return le.Uint32(b[off:]), true
		}
		return 0, false
	}
	ce, okc := field(0x84)
	me, okm := field(0x88)
	ae, oka := field(0x8C)
	n.Ctime = extTime(le.Uint32(b[0xC:]), ce, okc)
	n.Mtime = extTime(le.Uint32(b[0x10:]), me, okm)
	n.Atime = extTime(le.Uint32(b[0x8:]), ae, oka)
	if t := n.Mode & ModeType; t == ModeChar || t == ModeBlock {
		n.Rdev = extDev(le.Uint32(b[0x28:]), le.Uint32(b[0x2C:]))
	}
	return n
}

// ReadDir implements FS: the directory file read whole (bounded, F2) and parsed.
func (f *extFS) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	if n := f.node(ino, b); !n.IsDir() {
		return nil, fmt.Errorf("ext: inode %d: %w", ino, ErrNotDir)
	}
	file, err := f.file(ino, b)
	if err != nil {
		return nil, err
	}
	if file.size > maxDirBytes {
		return nil, damaged("ext: directory inode %d of %d bytes", ino, file.size)
	}
	data := make([]byte, file.size)
	if _, err := file.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return f.parseDir(ino, data)
}

// parseDir parses linear directory blocks; every record must lie inside
// its block.
func (f *extFS) parseDir(ino uint64, data []byte) ([]DirEntry, error) {
	var out []DirEntry
	for blk := int64(0); blk < int64(len(data)); blk += f.bs {
		b := data[blk:min(blk+f.bs, int64(len(data)))]
		for off := 0; off+8 <= len(b); {
			le := binary.LittleEndian
			in, rl := le.Uint32(b[off:]), int(le.Uint16(b[off+4:]))
			nl := int(b[off+6])
			if f.incompat&extIncompatFType == 0 {
				nl = int(le.Uint16(b[off+6:]))
			}
			if rl < 8 || rl%4 != 0 || off+rl > len(b) || 8+nl > rl {
				return nil, damaged("ext: directory inode %d: bad record at byte %d", ino, blk+int64(off))
			}
			name := string(b[off+8 : off+8+nl])
			if in != 0 && name != "." && name != ".." && nl > 0 {
				out = append(out, DirEntry{Name: name, Ino: uint64(in)})
			}
			off += rl
		}
	}
	return out, nil
}

// Open implements FS.
func (f *extFS) Open(_ context.Context, ino uint64) (File, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	return f.file(ino, b)
}

// Readlink implements FS: a fast symlink's target is in the inode, a slow one's in its blocks.
func (f *extFS) Readlink(ctx context.Context, ino uint64) (string, error) {
	b, err := f.inode(ino)
	if err != nil {
		return "", err
	}
	n := f.node(ino, b)
	if !n.IsSymlink() {
		return "", damaged("ext: inode %d is not a symlink", ino)
	}
	if n.Size > maxSymlink {
		return "", damaged("ext: symlink inode %d of %d bytes", ino, n.Size)
	}
	flags := binary.LittleEndian.Uint32(b[0x20:])
	// A fast symlink keeps its target in i_block when it has no blocks
	// but, maybe, its extended attribute block (as Linux decides it).
	if n.Size < 60 && flags&extFlagExtents == 0 && f.dataSectors(b) == 0 || flags&extFlagInline != 0 && n.Size < 60 {
		return string(b[0x28 : 0x28+n.Size]), nil
	}
	file, err := f.file(ino, b)
	if err != nil {
		return "", err
	}
	buf := make([]byte, n.Size)
	if _, err := file.ReadAt(buf, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(buf), nil
}

// dataSectors is i_blocks (512-byte units) less the extended attribute
// block's, if the inode has one.
func (f *extFS) dataSectors(b []byte) int64 {
	le := binary.LittleEndian
	n := int64(le.Uint32(b[0x1C:]))
	if le.Uint32(b[0x68:]) != 0 || le.Uint16(b[0x76:]) != 0 {
		n -= f.bs / 512
	}
	return n
}

// extFile maps a file's logical blocks to the volume's (ext and xfs).
type extFile struct {
	r    io.ReaderAt // the volume
	bs   int64       // block size
	size int64
	ext  []extExtent // sorted by logical block, disjoint
}

type extExtent struct {
	lblk, pblk, n int64
}

func (f *extFS) file(ino uint64, b []byte) (*extFile, error) {
	n := f.node(ino, b)
	flags := binary.LittleEndian.Uint32(b[0x20:])
	switch {
	case flags&extFlagInline != 0:
		return nil, unsupported("ext: inode %d keeps its data inline", ino)
	case flags&extFlagEncrypt != 0:
		return nil, unsupported("ext: inode %d is encrypted", ino)
	}
	file := &extFile{r: f.r, bs: f.bs, size: n.Size}
	var err error
	if flags&extFlagExtents != 0 {
		budget := extMaxNodes
		err = f.walkExtents(ino, b[0x28:0x28+60], extMaxDepth+1, &budget, &file.ext)
	} else {
		err = f.walkBlockMap(ino, b[0x28:0x28+60], file)
	}
	if err != nil {
		return nil, err
	}
	return file, nil
}

// walkExtents appends the leaf extents of the extent tree node b; depth
// must fall per level and the blocks read are counted against budget (F3), so
// a damaged tree (a node listed many times) cannot make the walk endless.
func (f *extFS) walkExtents(ino uint64, b []byte, parentDepth int, budget *int, out *[]extExtent) error {
	le := binary.LittleEndian
	if len(b) < 12 || le.Uint16(b) != 0xF30A {
		return damaged("ext: inode %d: bad extent header", ino)
	}
	n, depth := int(le.Uint16(b[2:])), int(le.Uint16(b[6:]))
	if depth >= parentDepth || 12+12*n > len(b) {
		return damaged("ext: inode %d: extent node of depth %d with %d entries", ino, depth, n)
	}
	for i := range n {
		e := b[12+12*i:]
		if depth == 0 {
			if err := f.addExtent(ino, e, out); err != nil {
				return err
			}
			continue
		}
		child := int64(le.Uint32(e[4:])) | int64(le.Uint16(e[8:]))<<32
		if *budget--; *budget < 0 {
			return damaged("ext: inode %d: over %d extent tree blocks", ino, extMaxNodes)
		}
		if child <= 0 || child >= f.blocks {
			return damaged("ext: inode %d: extent index points to block %d", ino, child)
		}
		nb, err := f.readAt(child*f.bs, f.bs)
		if err != nil {
			return err
		}
		if err := f.walkExtents(ino, nb, depth, budget, out); err != nil {
			return err
		}
	}
	return nil
}

func (f *extFS) addExtent(ino uint64, e []byte, out *[]extExtent) error {
	le := binary.LittleEndian
	l := int64(le.Uint16(e[4:]))
	if l > 32768 { // uninitialized (preallocated): reads as zeros
		return nil
	}
	x := extExtent{lblk: int64(le.Uint32(e)), n: l, pblk: int64(le.Uint32(e[8:])) | int64(le.Uint16(e[6:]))<<32}
	if x.n == 0 {
		return nil
	}
	if x.pblk <= 0 || x.pblk+x.n > f.blocks {
		return damaged("ext: inode %d: extent at block %d+%d outside the volume", ino, x.pblk, x.n)
	}
	if k := len(*out); k > 0 && (*out)[k-1].lblk+(*out)[k-1].n > x.lblk || k >= extMaxExtents {
		return damaged("ext: inode %d: extents overlap, are out of order or over %d", ino, extMaxExtents)
	}
	*out = append(*out, x)
	return nil
}

// walkBlockMap reads an ext2/3 block map: 12 direct pointers, then
// single, double and triple indirect blocks; zero pointers are holes.
func (f *extFS) walkBlockMap(ino uint64, iblock []byte, file *extFile) error {
	le := binary.LittleEndian
	per := f.bs / 4
	lblk := int64(0)
	budget := min(int64(extMaxExtents), f.blocks) // indirect blocks read
	add := func(p int64) error {
		if p != 0 {
			if p >= f.blocks {
				return damaged("ext: inode %d: block pointer %d outside the volume", ino, p)
			}
			if k := len(file.ext); k > 0 && file.ext[k-1].lblk+file.ext[k-1].n == lblk && file.ext[k-1].pblk+file.ext[k-1].n == p {
				file.ext[k-1].n++
			} else if k >= extMaxExtents {
				return damaged("ext: inode %d: over %d extents", ino, extMaxExtents)
			} else {
				file.ext = append(file.ext, extExtent{lblk: lblk, pblk: p, n: 1})
			}
		}
		lblk++
		return nil
	}
	var walk func(p int64, level int) error
	walk = func(p int64, level int) error {
		span := int64(1)
		for range level {
			span *= per
		}
		if p == 0 || level == 0 || lblk*f.bs >= file.size {
			if level == 0 {
				return add(p)
			}
			lblk += span // a hole the size of the whole subtree
			return nil
		}
		if budget--; p >= f.blocks || budget < 0 {
			return damaged("ext: inode %d: indirect block %d outside the volume or too many", ino, p)
		}
		b, err := f.readAt(p*f.bs, f.bs)
		if err != nil {
			return err
		}
		for i := range per {
			if err := walk(int64(le.Uint32(b[4*i:])), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range 15 {
		level := max(0, i-11)
		if err := walk(int64(le.Uint32(iblock[4*i:])), level); err != nil {
			return err
		}
	}
	return nil
}

// Size implements File.
func (x *extFile) Size() int64 { return x.size }

// Extents implements File: mapped blocks, merged where they touch.
func (x *extFile) Extents(context.Context) ([]Extent, error) {
	var out []Extent
	bs := x.bs
	for _, e := range x.ext {
		off := e.lblk * bs
		if off >= x.size {
			break
		}
		l := min(e.n*bs, x.size-off)
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == off {
			out[k-1].Len += l
		} else {
			out = append(out, Extent{off, l})
		}
	}
	return out, nil
}

// ReadAt reads the file's bytes; holes read as zeros.
func (x *extFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ext: negative offset: %w", ErrDamaged)
	}
	if off >= x.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), x.size-off)
	bs := x.bs
	i := sort.Search(len(x.ext), func(i int) bool { return (x.ext[i].lblk+x.ext[i].n)*bs > off })
	for done := int64(0); done < want; {
		pos := off + done
		if i >= len(x.ext) || x.ext[i].lblk*bs > pos { // a hole
			end := want
			if i < len(x.ext) {
				end = min(want, x.ext[i].lblk*bs-off)
			}
			clear(p[done:end])
			done = end
			continue
		}
		e := x.ext[i]
		in := pos - e.lblk*bs
		n := min(want-done, e.n*bs-in)
		if _, err := x.r.ReadAt(p[done:done+n], e.pblk*bs+in); err != nil {
			return int(done), err
		}
		done += n
		i++
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// extDev decodes a device number: the old 8:8 form in i_block[0], else
// the new one in i_block[1] (minor's low byte, major, minor's high bits).
func extDev(old, nw uint32) uint64 {
	if old != 0 {
		return unix.Mkdev(old>>8&0xFF, old&0xFF)
	}
	return unix.Mkdev(nw>>8&0xFFF, nw&0xFF|nw>>12&0xFFF00)
}

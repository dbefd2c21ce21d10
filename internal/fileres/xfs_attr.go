package fileres

import (
	"context"
	"encoding/binary"
	"io"
)

// XFS extended attributes (docs/fileres.md "Extended attributes"): the
// attribute fork after forkoff×8 bytes of the inode's literal area holds
// a short-form list (local format), or maps blocks (extents or B+tree
// format) that form a dabtree: one leaf block, or node blocks above a
// chain of leaves. Values too large for a leaf live in remote blocks.

const (
	xfsAttrLocal      = 0x01
	xfsAttrRoot       = 0x02 // trusted.
	xfsAttrSecure     = 0x04 // security.
	xfsAttrParent     = 0x08 // parent pointers: not user-visible attributes
	xfsAttrIncomplete = 0x80 // being set or removed: not an attribute yet

	xfsAttrLeafMagic  = 0xFBEE
	xfsAttr3LeafMagic = 0x3BEE
	xfsDANodeMagic    = 0xFEBE
	xfsDA3NodeMagic   = 0x3EBE
	xfsAttrRmtHdr     = 56 // v5 remote value block header ("XARM")
	xfsDAMaxDepth     = 5
	xfsAttrMaxBlocks  = 1 << 16 // attribute fork blocks one file may have read
)

// Xattrs implements XattrFS.
func (f *xfsFS) Xattrs(ctx context.Context, ino uint64) ([]Xattr, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	l := &xattrList{ino: ino}
	fork, err := f.attrFork(ino, b)
	if err != nil || fork == nil {
		return nil, err
	}
	switch b[83] {
	case xfsFmtLocal:
		err = f.shortAttrs(l, fork)
	case xfsFmtExtents, xfsFmtBtree:
		err = f.attrTree(ctx, l, b, fork)
	default:
		err = damaged("xfs: inode %d: attribute fork format %d", ino, b[83])
	}
	if err != nil {
		return nil, err
	}
	return l.done()
}

// attrFork returns the attribute fork (nil when forkoff is 0: none).
func (f *xfsFS) attrFork(ino uint64, b []byte) ([]byte, error) {
	off := int64(b[82]) * 8
	if off == 0 {
		return nil, nil
	}
	lit := int64(100)
	if b[4] == 3 {
		lit = 176
	}
	if lit+off >= f.isz {
		return nil, damaged("xfs: inode %d: attribute fork at %d", ino, off)
	}
	return b[lit+off:], nil
}

// anextents is the attribute fork's extent count (32-bit with nrext64).
func (f *xfsFS) anextents(b []byte) uint64 {
	be := binary.BigEndian
	if b[4] == 3 && be.Uint64(b[120:])&xfsFlag2NRext64 != 0 {
		return uint64(be.Uint32(b[76:]))
	}
	return uint64(be.Uint16(b[80:]))
}

// xfsAttrName gives an attribute's Linux name from its namespace flags,
// or "" for one that is not listed (parent pointers, incomplete). The
// ACLs are trusted-namespace SGI_ACL_FILE and SGI_ACL_DEFAULT.
func xfsAttrName(flags byte, name string) string {
	switch {
	case flags&(xfsAttrParent|xfsAttrIncomplete) != 0:
		return ""
	case flags&xfsAttrRoot != 0 && name == "SGI_ACL_FILE":
		return xattrACLAccess
	case flags&xfsAttrRoot != 0 && name == "SGI_ACL_DEFAULT":
		return xattrACLDefault
	case flags&xfsAttrRoot != 0:
		return "trusted." + name
	case flags&xfsAttrSecure != 0:
		return "security." + name
	}
	return "user." + name
}

// addAttr adds one attribute. An ACL comes twice, as Linux lists it on
// XFS: in the xattr form under its system. name, and as stored under
// trusted.SGI_ACL_* (X4).
func (f *xfsFS) addAttr(l *xattrList, flags byte, name string, val []byte) error {
	full := xfsAttrName(flags, name)
	if full == "" {
		return nil
	}
	if full == xattrACLAccess || full == xattrACLDefault {
		acl, err := xfsACL(l.ino, val)
		if err == nil {
			err = l.add(full, acl)
		}
		if err != nil {
			return err
		}
		full = "trusted." + name
	}
	return l.add(full, val)
}

// xfsACL turns XFS's ACL (be32 count, then 12-byte entries: be32 tag,
// be32 id, be16 perm, pad) into the xattr form (X4).
func xfsACL(ino uint64, b []byte) ([]byte, error) {
	be := binary.BigEndian
	if len(b) < 4 || uint64(be.Uint32(b))*12 != uint64(len(b)-4) {
		return nil, damaged("xfs: inode %d: ACL of %d bytes", ino, len(b))
	}
	ents := make([]aclEntry, 0, (len(b)-4)/12)
	for off := 4; off+12 <= len(b); off += 12 {
		tag := be.Uint32(b[off:])
		if tag > 0xFFFF {
			return nil, damaged("xfs: inode %d: ACL tag 0x%x", ino, tag)
		}
		ents = append(ents, aclEntry{tag: uint16(tag), id: be.Uint32(b[off+4:]), perm: be.Uint16(b[off+8:])})
	}
	return aclXattr(ents)
}

// shortAttrs parses a short-form attribute list: be16 total size, count,
// pad, then entries of name length, value length, flags, name, value.
func (f *xfsFS) shortAttrs(l *xattrList, fork []byte) error {
	if len(fork) < 4 {
		return damaged("xfs: inode %d: short-form attributes in %d bytes", l.ino, len(fork))
	}
	total, n := int(binary.BigEndian.Uint16(fork)), int(fork[2])
	if total < 4 || total > len(fork) {
		return damaged("xfs: inode %d: short-form attributes of %d bytes in a %d-byte fork", l.ino, total, len(fork))
	}
	b := fork[:total]
	off := 4
	for range n {
		if off+3 > len(b) || off+3+int(b[off])+int(b[off+1]) > len(b) {
			return damaged("xfs: inode %d: short-form attribute past its list", l.ino)
		}
		nl, vl, fl := int(b[off]), int(b[off+1]), b[off+2]
		name := string(b[off+3 : off+3+nl])
		val := append([]byte(nil), b[off+3+nl:off+3+nl+vl]...)
		if err := f.addAttr(l, fl, name, val); err != nil {
			return err
		}
		off += 3 + nl + vl
	}
	return nil
}

// attrTree maps the attribute fork's blocks and walks its dabtree from
// block 0: down the first pointer of node blocks to the first leaf
// (levels must fall, ≤ 5), then along the leaves' forward links, each
// block counted against xfsAttrMaxBlocks and visited once (F3).
func (f *xfsFS) attrTree(ctx context.Context, l *xattrList, b, fork []byte) error {
	m := &extFile{r: f.r, bs: f.bs}
	if b[83] == xfsFmtExtents {
		cnt := f.anextents(b)
		if cnt > uint64(len(fork)/16) {
			return damaged("xfs: inode %d: %d attribute extents in a %d-byte fork", l.ino, cnt, len(fork))
		}
		if err := f.addRecs(l.ino, fork[:cnt*16], &m.ext); err != nil {
			return err
		}
	} else {
		budget := extMaxNodes
		if err := f.walkBmapRoot(l.ino, fork, &budget, &m.ext); err != nil {
			return err
		}
	}
	k := len(m.ext)
	if k == 0 {
		return nil // an emptied fork XFS kept in extents format
	}
	m.size = (m.ext[k-1].lblk + m.ext[k-1].n) * f.bs
	seen := map[uint32]bool{}
	blk, level := uint32(0), xfsDAMaxDepth+1
	for range xfsAttrMaxBlocks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if seen[blk] {
			return damaged("xfs: inode %d: attribute block %d reached twice", l.ino, blk)
		}
		seen[blk] = true
		data, err := f.attrBlock(l.ino, m, blk)
		if err != nil {
			return err
		}
		next, down, err := f.attrNode(l, m, data, &level)
		if err != nil || (next == 0 && !down) {
			return err
		}
		blk = next
	}
	return damaged("xfs: inode %d: over %d attribute blocks", l.ino, xfsAttrMaxBlocks)
}

// attrBlock reads block blk of the attribute fork (a hole is damage).
func (f *xfsFS) attrBlock(ino uint64, m *extFile, blk uint32) ([]byte, error) {
	off := int64(blk) * f.bs
	if !m.mapped(int64(blk), 1) {
		return nil, damaged("xfs: inode %d: attribute block %d not mapped", ino, blk)
	}
	data := make([]byte, f.bs)
	if _, err := m.ReadAt(data, off); err != nil && err != io.EOF {
		return nil, err
	}
	return data, nil
}

// attrNode handles one dabtree block: a node gives its first child
// (down), a leaf is parsed and gives its forward link (0: the last).
func (f *xfsFS) attrNode(l *xattrList, m *extFile, b []byte, level *int) (next uint32, down bool, err error) {
	be := binary.BigEndian
	hdr, cnt := 16, 12 // node header: block info, be16 count, be16 level (v5: then 4 bytes of pad)
	if f.v5 {
		hdr, cnt = 64, 56
	}
	switch magic := be.Uint16(b[8:]); {
	case magic == xfsDANodeMagic && !f.v5 || magic == xfsDA3NodeMagic && f.v5:
		n, lv := int(be.Uint16(b[cnt:])), int(be.Uint16(b[cnt+2:]))
		if lv < 1 || lv >= *level || n < 1 || hdr+8*n > len(b) {
			return 0, false, damaged("xfs: inode %d: attribute node of level %d with %d entries", l.ino, lv, n)
		}
		*level = lv
		return be.Uint32(b[hdr+4:]), true, nil
	case magic == xfsAttrLeafMagic && !f.v5 || magic == xfsAttr3LeafMagic && f.v5:
		*level = 0
		return be.Uint32(b), false, f.attrLeaf(l, m, b)
	default:
		return 0, false, damaged("xfs: inode %d: attribute block with magic 0x%x", l.ino, magic)
	}
}

// attrLeaf parses a leaf block: a header (count at byte 12, entries from
// 32; v5: count at 56, entries from 80), then 8-byte entries (be32 hash,
// be16 offset of the name, flags); a local name is be16 value length,
// name length, name, value; a remote one be32 value block, be32 value
// length, name length, name.
func (f *xfsFS) attrLeaf(l *xattrList, m *extFile, b []byte) error {
	be := binary.BigEndian
	cnt, ents := 12, 32
	if f.v5 {
		cnt, ents = 56, 80
	}
	n := int(be.Uint16(b[cnt:]))
	if ents+8*n > len(b) {
		return damaged("xfs: inode %d: attribute leaf with %d entries", l.ino, n)
	}
	for i := range n {
		e := b[ents+8*i:]
		at, fl := int(be.Uint16(e[4:])), e[6]
		var err error
		if fl&xfsAttrLocal != 0 {
			err = f.localAttr(l, b, at, fl)
		} else {
			err = f.remoteAttr(l, m, b, at, fl)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (f *xfsFS) localAttr(l *xattrList, b []byte, at int, fl byte) error {
	if at+3 > len(b) {
		return damaged("xfs: inode %d: attribute name at %d past its block", l.ino, at)
	}
	vl, nl := int(binary.BigEndian.Uint16(b[at:])), int(b[at+2])
	if at+3+nl+vl > len(b) {
		return damaged("xfs: inode %d: attribute at %d past its block", l.ino, at)
	}
	val := append([]byte(nil), b[at+3+nl:at+3+nl+vl]...)
	return f.addAttr(l, fl, string(b[at+3:at+3+nl]), val)
}

// remoteAttr reads a value kept in blocks of its own, starting at fork
// block valueblk; on v5 each block starts with a 56-byte header ("XARM",
// offset, bytes) and holds the rest (X2: ≤ 64 KiB).
func (f *xfsFS) remoteAttr(l *xattrList, m *extFile, b []byte, at int, fl byte) error {
	be := binary.BigEndian
	if at+9 > len(b) || at+9+int(b[at+8]) > len(b) {
		return damaged("xfs: inode %d: remote attribute at %d past its block", l.ino, at)
	}
	blk, vl, name := int64(be.Uint32(b[at:])), int64(be.Uint32(b[at+4:])), string(b[at+9:at+9+int(b[at+8])])
	if fl&xfsAttrIncomplete != 0 || xfsAttrName(fl, name) == "" {
		return nil
	}
	if vl > maxXattrValue {
		return damaged("xfs: inode %d: attribute %q of %d bytes", l.ino, name, vl)
	}
	hdr := int64(0)
	if f.v5 {
		hdr = xfsAttrRmtHdr
	}
	per := f.bs - hdr
	nblk := (vl + per - 1) / per
	if !m.mapped(blk, nblk) {
		return damaged("xfs: inode %d: attribute %q in unmapped blocks %d+%d", l.ino, name, blk, nblk)
	}
	raw := make([]byte, nblk*f.bs)
	if _, err := m.ReadAt(raw, blk*f.bs); err != nil && err != io.EOF {
		return err
	}
	val := make([]byte, 0, vl)
	for i := int64(0); i < nblk; i++ {
		r := raw[i*f.bs : (i+1)*f.bs]
		want := min(per, vl-int64(len(val)))
		if f.v5 && (string(r[:4]) != "XARM" || int64(be.Uint32(r[8:])) != want) {
			return damaged("xfs: inode %d: attribute %q: bad remote block header", l.ino, name)
		}
		val = append(val, r[hdr:hdr+want]...)
	}
	return f.addAttr(l, fl, name, val)
}

// mapped reports whether blocks [blk, blk+n) of the file are all mapped.
func (x *extFile) mapped(blk, n int64) bool {
	if blk < 0 || n < 0 {
		return false
	}
	for _, e := range x.ext {
		if n == 0 {
			break
		}
		if e.lblk <= blk && blk < e.lblk+e.n {
			k := min(n, e.lblk+e.n-blk)
			blk, n = blk+k, n-k
		}
	}
	return n == 0
}

package fileres

import (
	"context"
	"encoding/binary"
	"io"
)

// ext2/3/4 extended attributes (docs/fileres.md "Extended attributes"):
// entries in the inode after i_extra_isize and in one block named by
// i_file_acl, each entry's value in the same region (or, with ea_inode,
// in an inode of its own).

const (
	extXattrMagic = 0xEA020000
	extXattrEntry = 16 // fixed part of an entry, before the name
	extXattrBlock = 32 // header of an xattr block
)

// extXattrPrefix maps an entry's name index to its namespace; indexes 2
// and 3 are the POSIX ACLs, whose name is the prefix alone. Others
// (system.data of inline files, richacl, Lustre) are not listed, as
// Linux does not list them either.
var extXattrPrefix = map[byte]string{1: "user.", 2: xattrACLAccess, 3: xattrACLDefault, 4: "trusted.", 6: "security."}

// Xattrs implements XattrFS.
func (f *extFS) Xattrs(ctx context.Context, ino uint64) ([]Xattr, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	l := &xattrList{ino: ino}
	le := binary.LittleEndian
	if f.isz > 128 {
		extra := int64(le.Uint16(b[0x80:]))
		if extra%4 != 0 || 128+extra > f.isz {
			return nil, damaged("ext: inode %d: i_extra_isize %d", ino, extra)
		}
		// the in-inode region: magic, then entries; values are relative
		// to the first entry (X1)
		if r := b[128+extra:]; len(r) >= 4 && le.Uint32(r) == extXattrMagic {
			if err := f.xattrEntries(ctx, l, r[4:], r[4:]); err != nil {
				return nil, err
			}
		}
	}
	if blk := int64(le.Uint32(b[0x68:])) | int64(le.Uint16(b[0x76:]))<<32; blk != 0 {
		if err := f.xattrBlock(ctx, l, blk); err != nil {
			return nil, err
		}
	}
	return l.done()
}

// xattrBlock reads the attribute block blk: a 32-byte header (magic,
// refcount, h_blocks = 1), entries from byte 32, values relative to the
// block's start (X1).
func (f *extFS) xattrBlock(ctx context.Context, l *xattrList, blk int64) error {
	if blk <= 0 || blk >= f.blocks {
		return damaged("ext: inode %d: xattr block %d outside the volume", l.ino, blk)
	}
	b, err := f.readAt(blk*f.bs, f.bs)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint32(b) != extXattrMagic || le.Uint32(b[8:]) != 1 {
		return damaged("ext: inode %d: xattr block %d: bad header", l.ino, blk)
	}
	return f.xattrEntries(ctx, l, b[extXattrBlock:], b)
}

// xattrEntries walks the entries in ents up to the 4 zero bytes that end
// them; each entry: name length, name index, value offset (into vals),
// value inode, value size, hash, name, padded to 4 bytes. Every name and
// value must lie in its region (F1).
func (f *extFS) xattrEntries(ctx context.Context, l *xattrList, ents, vals []byte) error {
	le := binary.LittleEndian
	for off := 0; off+4 <= len(ents) && le.Uint32(ents[off:]) != 0; {
		e := ents[off:]
		if len(e) < extXattrEntry || extXattrEntry+int(e[0]) > len(e) {
			return damaged("ext: inode %d: xattr entry at %d past its region", l.ino, off)
		}
		nl, voff, vino, vsize := int(e[0]), int(le.Uint16(e[2:])), uint64(le.Uint32(e[4:])), int64(le.Uint32(e[8:]))
		name := string(e[extXattrEntry : extXattrEntry+nl])
		off += (extXattrEntry + nl + 3) &^ 3
		prefix, ok := extXattrPrefix[e[1]]
		if !ok {
			continue
		}
		if vsize > maxXattrValue {
			return damaged("ext: inode %d: xattr %s%s of %d bytes", l.ino, prefix, name, vsize)
		}
		var val []byte
		var err error
		switch {
		case vino != 0:
			val, err = f.xattrInodeValue(ctx, l.ino, vino, vsize)
		case int64(voff)+vsize > int64(len(vals)):
			err = damaged("ext: inode %d: xattr %s%s value past its region", l.ino, prefix, name)
		default:
			val = append([]byte(nil), vals[voff:int64(voff)+vsize]...)
		}
		if err == nil && (e[1] == 2 || e[1] == 3) {
			name = "" // the prefix is the whole name
			val, err = extACL(l.ino, val)
		}
		if err != nil {
			return err
		}
		if err := l.add(prefix+name, val); err != nil {
			return err
		}
	}
	return nil
}

// xattrInodeValue reads a value kept in an inode of its own (ea_inode):
// that inode's data, vsize bytes (≤ maxXattrValue, F2).
func (f *extFS) xattrInodeValue(ctx context.Context, ino, vino uint64, vsize int64) ([]byte, error) {
	if vino == ino {
		return nil, damaged("ext: inode %d: xattr value in itself", ino)
	}
	vb, err := f.inode(vino)
	if err != nil {
		return nil, err
	}
	file, err := f.file(vino, vb)
	if err != nil {
		return nil, err
	}
	if file.size < vsize {
		return nil, damaged("ext: inode %d: xattr value inode %d holds %d of %d bytes", ino, vino, file.size, vsize)
	}
	val := make([]byte, vsize)
	if _, err := file.ReadAt(val, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return val, ctx.Err()
}

// extACL turns ext4's ACL (le32 version 1, then 4-byte entries for the
// owner, group, mask and other, 8-byte ones with an ID for named users
// and groups) into the xattr form (X4).
func extACL(ino uint64, b []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(b) < 4 || le.Uint32(b) != 1 {
		return nil, damaged("ext: inode %d: ACL of version %x", ino, b[:min(4, len(b))])
	}
	var ents []aclEntry
	for off := 4; off < len(b); {
		if off+4 > len(b) {
			return nil, damaged("ext: inode %d: ACL cut short", ino)
		}
		e := aclEntry{tag: le.Uint16(b[off:]), perm: le.Uint16(b[off+2:])}
		off += 4
		if e.tag == aclUser || e.tag == aclGroup {
			if off+4 > len(b) {
				return nil, damaged("ext: inode %d: ACL cut short", ino)
			}
			e.id = le.Uint32(b[off:])
			off += 4
		}
		ents = append(ents, e)
	}
	return aclXattr(ents)
}

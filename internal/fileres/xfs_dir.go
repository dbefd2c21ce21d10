package fileres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// XFS directories. A short-form directory lives in the inode; every other
// form (block, leaf, node, B+tree-mapped) keeps its names in data blocks
// below the 32 GiB mark of the directory's address space, and the size
// of the directory inode covers exactly those. So a listing reads the
// data blocks in order and parses each: a block directory ("XDB3"/"XD2B")
// ends with a hash leaf and a tail that are skipped, a data block
// ("XDD3"/"XD2D") is entries to its end, a hole (a freed data block of a
// node directory) is skipped.

// ReadDir implements FS.
func (f *xfsFS) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	b, err := f.inode(ino)
	if err != nil {
		return nil, err
	}
	n, err := f.node(ino, b)
	if err != nil {
		return nil, err
	}
	if !n.IsDir() {
		return nil, fmt.Errorf("xfs: inode %d: %w", ino, ErrNotDir)
	}
	if b[5] == xfsFmtLocal {
		fork, err := f.dataFork(ino, b)
		if err != nil {
			return nil, err
		}
		return f.shortDir(ino, fork)
	}
	file, err := f.file(ino, b)
	if err != nil {
		return nil, err
	}
	if n.Size > maxDirBytes || n.Size > xfsDirLeafOffset || n.Size%f.dirbs != 0 {
		return nil, damaged("xfs: directory inode %d of %d bytes", ino, n.Size)
	}
	// Past the last mapped data block there are only holes: allocate for
	// what is mapped, not for what a damaged size says (F2).
	mapped := int64(0)
	for _, e := range file.ext {
		if e.lblk*f.bs < xfsDirLeafOffset {
			mapped = min(n.Size, (e.lblk+e.n)*f.bs)
		}
	}
	mapped = (mapped + f.dirbs - 1) / f.dirbs * f.dirbs
	data := make([]byte, mapped)
	if _, err := file.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, err
	}
	var out []DirEntry
	for off := int64(0); off < mapped; off += f.dirbs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if out, err = f.dirBlock(ino, data[off:off+f.dirbs], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// shortDir parses a short-form directory: count, count of 8-byte inode
// numbers (then all are 8 bytes, else 4), the parent, then entries of
// name length, 2-byte offset, name, file type (ftype) and inode number.
func (f *xfsFS) shortDir(ino uint64, b []byte) ([]DirEntry, error) {
	if len(b) < 6 {
		return nil, damaged("xfs: short-form directory inode %d too small", ino)
	}
	count, isz := int(b[0]), 4
	if b[1] != 0 {
		isz = 8
	}
	var out []DirEntry
	pos := 2 + isz
	for i := range count {
		if pos >= len(b) {
			return nil, damaged("xfs: short-form directory inode %d: entry %d beyond its fork", ino, i)
		}
		nl := int(b[pos])
		ft := 0
		if f.ftype {
			ft = 1
		}
		end := pos + 3 + nl + ft + isz
		if nl == 0 || end > len(b) {
			return nil, damaged("xfs: short-form directory inode %d: entry %d overruns its fork", ino, i)
		}
		in := b[end-isz : end]
		num := uint64(binary.BigEndian.Uint32(in))
		if isz == 8 {
			num = binary.BigEndian.Uint64(in)
		}
		out = append(out, DirEntry{Name: string(b[pos+3 : pos+3+nl]), Ino: num})
		pos = end
	}
	return out, nil
}

// dirBlock appends the entries of one directory data block: after the
// header (64 bytes v5, 16 v4), 8-byte-aligned entries (inode, name
// length, name, ftype, tag) or free spaces (0xFFFF, length).
func (f *xfsFS) dirBlock(ino uint64, b []byte, out []DirEntry) ([]DirEntry, error) {
	be := binary.BigEndian
	hdr, end := 16, len(b)
	blockMagic, dataMagic := "XD2B", "XD2D"
	if f.v5 {
		hdr, blockMagic, dataMagic = 64, "XDB3", "XDD3"
	}
	switch string(b[:4]) {
	case dataMagic:
	case blockMagic: // the hash leaf (8 bytes an entry) and the 8-byte tail end it
		leaf := int64(be.Uint32(b[len(b)-8:]))
		if leaf > int64(len(b)-hdr-8)/8 {
			return nil, damaged("xfs: directory inode %d: block leaf of %d entries", ino, leaf)
		}
		end = len(b) - 8 - 8*int(leaf)
	default:
		if allZero(b[:4]) {
			return out, nil // a hole: a freed data block
		}
		return nil, damaged("xfs: directory inode %d: data block magic %q", ino, b[:4])
	}
	ft := 0
	if f.ftype {
		ft = 1
	}
	for pos := hdr; pos < end; {
		if be.Uint16(b[pos:]) == 0xFFFF {
			l := int(be.Uint16(b[pos+2:]))
			if l < 8 || l%8 != 0 || pos+l > end {
				return nil, damaged("xfs: directory inode %d: free space of %d bytes at %d", ino, l, pos)
			}
			pos += l
			continue
		}
		if pos+9 > end {
			return nil, damaged("xfs: directory inode %d: entry at %d overruns its block", ino, pos)
		}
		nl := int(b[pos+8])
		l := (8 + 1 + nl + ft + 2 + 7) &^ 7
		if nl == 0 || pos+l > end {
			return nil, damaged("xfs: directory inode %d: entry at %d overruns its block", ino, pos)
		}
		name := string(b[pos+9 : pos+9+nl])
		if name != "." && name != ".." {
			out = append(out, DirEntry{Name: name, Ino: be.Uint64(b[pos:])})
		}
		if len(out) > maxDirBytes/16 {
			return nil, damaged("xfs: directory inode %d: too many entries", ino)
		}
		pos += l
	}
	return out, nil
}

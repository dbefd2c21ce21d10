package hashtree

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// Encoded tree (docs/format.md, "Hash tree file", H5), all integers
// little endian:
//
//	magic "BWHTREE\x00" | version u32 (2) | block size u32 | image size u64
//	| stored pages u32 | per stored page: index u32, listed leaves k u16
//	(1..1024), k × (leaf offset in the page u16, leaf 32 B)
//	| BLAKE3-256 of everything before it
//
// Only leaves that are not the zero-block leaf are listed (offsets
// strictly increasing); a page without one is not stored; stored pages
// are in increasing order. So a file grows with the blocks that hold
// data, not with the pages they touch: 1% of a 1 TiB disk's blocks
// scattered is 5.6 MB, not the 330 MB whole pages took (version 1).
const (
	magic       = "BWHTREE\x00"
	version     = 2
	headerSize  = 8 + 4 + 4 + 8 + 4
	trailerSize = 32
	leafRecord  = 2 + 32
)

// MarshalBinary encodes the tree's leaves; nodes are recomputed on load.
func (t *Tree) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	_ = t.Encode(&buf)
	return buf.Bytes(), nil
}

// Encode writes the encoded tree to w.
func (t *Tree) Encode(w io.Writer) error {
	h := blake3.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<16)
	z := ZeroLeaf(t.blockSize)
	var recs [][]byte
	for p, pg := range t.pages {
		if pg == nil {
			continue
		}
		rec := binary.LittleEndian.AppendUint32(nil, uint32(p))
		rec = append(rec, 0, 0)
		k := 0
		for i, l := range t.fullLeavesOrSparse(pg) {
			if l.leaf != z {
				rec = binary.LittleEndian.AppendUint16(rec, l.off)
				rec, k = append(rec, l.leaf[:]...), k+1
			}
			_ = i
		}
		if k > 0 {
			binary.LittleEndian.PutUint16(rec[4:], uint16(k))
			recs = append(recs, rec)
		}
	}
	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, version)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(t.blockSize))
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(t.size))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(recs)))
	bw.Write(hdr)
	for _, rec := range recs {
		bw.Write(rec)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(h.Sum(nil))
	return err
}

// Decode reads an encoded tree, checking everything an outside byte
// could get wrong: a corrupt or truncated tree is ErrCorrupt.
func Decode(b []byte) (*Tree, error) {
	if len(b) < headerSize+trailerSize || string(b[:8]) != magic {
		return nil, fmt.Errorf("%w: bad magic or short (%d bytes)", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-trailerSize], b[len(b)-trailerSize:]
	if got := blake3.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != version {
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	bs := int(binary.LittleEndian.Uint32(b[12:]))
	size := int64(binary.LittleEndian.Uint64(b[16:]))
	if !ValidBlockSize(bs) || size < 0 || size > 1<<56 {
		return nil, fmt.Errorf("%w: block size %d, image size %d", ErrCorrupt, bs, size)
	}
	t, _ := New(size, bs)
	stored := int(binary.LittleEndian.Uint32(b[24:]))
	if err := t.decodePages(body[headerSize:], stored); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tree) decodePages(rest []byte, stored int) error {
	if stored > len(t.pages) {
		return fmt.Errorf("%w: %d stored pages of %d", ErrCorrupt, stored, len(t.pages))
	}
	last := -1
	for range stored {
		if len(rest) < 6 {
			return fmt.Errorf("%w: truncated page record", ErrCorrupt)
		}
		p, k := int(binary.LittleEndian.Uint32(rest)), int(binary.LittleEndian.Uint16(rest[4:]))
		if p <= last || p >= len(t.pages) || k == 0 || k > t.pageLen(p) || len(rest) < 6+k*leafRecord {
			return fmt.Errorf("%w: page %d (%d leaves) out of order, range or truncated", ErrCorrupt, p, k)
		}
		if err := t.decodeLeaves(p, rest[6:6+k*leafRecord]); err != nil {
			return err
		}
		rest, last = rest[6+k*leafRecord:], p
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(rest))
	}
	return nil
}

// decodeLeaves fills page p from its listed leaves: a copy of the zero
// page with the listed leaves set and only their nodes recomputed.
func (t *Tree) decodeLeaves(p int, recs []byte) error {
	n, z := t.pageLen(p), ZeroLeaf(t.blockSize)
	pg := &page{sparse: make([]sparseLeaf, 0, len(recs)/leafRecord)}
	for off := 0; off < len(recs); off += leafRecord {
		i := int(binary.LittleEndian.Uint16(recs[off:]))
		if i >= n || (len(pg.sparse) > 0 && i <= int(pg.sparse[len(pg.sparse)-1].off)) {
			return fmt.Errorf("%w: page %d: leaf %d out of order or range", ErrCorrupt, p, i)
		}
		s := sparseLeaf{off: uint16(i)}
		copy(s.leaf[:], recs[off+2:off+leafRecord])
		if s.leaf == z {
			return fmt.Errorf("%w: page %d: zero-block leaf %d listed", ErrCorrupt, p, i)
		}
		pg.sparse = append(pg.sparse, s)
	}
	if len(pg.sparse) > sparseMax {
		t.densify(pg, n)
	} else {
		pg.top = t.sparseTop(pg.sparse, 0, n)
	}
	t.pages[p] = pg
	return nil
}

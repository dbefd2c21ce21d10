package hashtree

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// Encoded tree (docs/format.md, "Hash tree file"), all integers little
// endian:
//
//	magic "BWHTREE\x00" | version u32 (1) | block size u32 | image size u64
//	| stored pages u32 | per stored page: index u32, its leaves (32 B each)
//	| BLAKE3-256 of everything before it
//
// Pages not stored are all zero leaves; stored pages are in increasing
// order (H5).
const (
	magic       = "BWHTREE\x00"
	version     = 1
	headerSize  = 8 + 4 + 4 + 8 + 4
	trailerSize = 32
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
	mw := io.MultiWriter(w, h)
	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, version)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(t.blockSize))
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(t.size))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(t.storedPages()))
	if _, err := mw.Write(hdr); err != nil {
		return err
	}
	for p, pg := range t.pages {
		if pg == nil {
			continue
		}
		rec := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+32*len(pg.levels[0])), uint32(p))
		for _, l := range pg.levels[0] {
			rec = append(rec, l[:]...)
		}
		if _, err := mw.Write(rec); err != nil {
			return err
		}
	}
	_, err := w.Write(h.Sum(nil))
	return err
}

func (t *Tree) storedPages() int {
	n := 0
	for _, pg := range t.pages {
		if pg != nil {
			n++
		}
	}
	return n
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
		if len(rest) < 4 {
			return fmt.Errorf("%w: truncated page record", ErrCorrupt)
		}
		p := int(binary.LittleEndian.Uint32(rest))
		if p <= last || p >= len(t.pages) {
			return fmt.Errorf("%w: page %d out of order or range", ErrCorrupt, p)
		}
		n := t.pageLen(p)
		if len(rest) < 4+32*n {
			return fmt.Errorf("%w: truncated page %d", ErrCorrupt, p)
		}
		leaves := make([]Hash, n)
		for i := range leaves {
			copy(leaves[i][:], rest[4+32*i:])
		}
		t.pages[p] = &page{levels: buildLevels(leaves)}
		rest, last = rest[4+32*n:], p
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(rest))
	}
	return nil
}

package fileres

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Journal replay (jbd2) for an ext3/4 filesystem a backup caught
// mid-flight: a crash-consistent snapshot of a running guest has
// needs_recovery set, and metadata committed to the journal but not yet
// written to its home (new inodes, directory entries, sizes). Reading it
// without the journal gives a stale, wrong tree, so the committed
// transactions are replayed, in memory, as mount does: an overlay maps
// each filesystem block to its newest committed copy in the journal.
// Everything read from the journal is untrusted like the rest (F1–F3):
// block numbers are checked, the walk is bounded by the journal's length.

const (
	jbdMagic      = 0xC03B3998
	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdIncompatRevoke = 0x1
	jbdIncompat64     = 0x2
	jbdIncompatCsumV2 = 0x8
	jbdIncompatCsumV3 = 0x10
	jbdIncompatFC     = 0x20 // fast commits: not replayed (refused)

	jbdTagEscape   = 0x1
	jbdTagSameUUID = 0x2
	jbdTagLast     = 0x8
)

// jblock is a journal block holding a filesystem block's newest copy.
type jblock struct {
	pos    int64 // block index in the journal file
	escape bool  // its first four bytes were the magic, stored zeroed
}

// replayJournal returns the filesystem blocks the committed transactions
// of f's journal rewrite, and how many transactions there were.
func (f *extFS) replayJournal(jino uint64) (map[int64]jblock, int, error) {
	ib, err := f.inode(jino)
	if err != nil {
		return nil, 0, err
	}
	j, err := f.file(jino, ib)
	if err != nil {
		return nil, 0, err
	}
	sb := make([]byte, 1024)
	if _, err := j.ReadAt(sb, 0); err != nil && err != io.EOF {
		return nil, 0, err
	}
	be := binary.BigEndian
	if be.Uint32(sb) != jbdMagic || (be.Uint32(sb[4:]) != jbdSuperV1 && be.Uint32(sb[4:]) != jbdSuperV2) {
		return nil, 0, damaged("ext: journal superblock magic")
	}
	jr := &jwalk{f: f, j: j, be: be, maxlen: int64(be.Uint32(sb[0x10:])), first: int64(be.Uint32(sb[0x14:]))}
	if be.Uint32(sb[4:]) == jbdSuperV2 {
		jr.incompat = be.Uint32(sb[0x28:])
	}
	switch {
	case int64(be.Uint32(sb[0xC:])) != f.bs:
		return nil, 0, unsupported("ext: journal block size %d, filesystem's %d", be.Uint32(sb[0xC:]), f.bs)
	case jr.maxlen*f.bs > j.size || jr.first < 1 || jr.first >= jr.maxlen:
		return nil, 0, damaged("ext: journal of %d blocks (first %d) in a %d-byte file", jr.maxlen, jr.first, j.size)
	case jr.incompat&jbdIncompatFC != 0:
		return nil, 0, unsupported("ext: the journal has fast commits")
	case jr.incompat&^uint32(jbdIncompatRevoke|jbdIncompat64|0x4|jbdIncompatCsumV2|jbdIncompatCsumV3) != 0:
		return nil, 0, unsupported("ext: journal features 0x%x", jr.incompat)
	}
	start := int64(be.Uint32(sb[0x1C:]))
	if start == 0 {
		return nil, 0, nil // clean
	}
	if start < jr.first || start >= jr.maxlen {
		return nil, 0, damaged("ext: journal starts at block %d of %d", start, jr.maxlen)
	}
	return jr.walk(start, be.Uint32(sb[0x18:]))
}

type jwalk struct {
	f             *extFS
	j             *extFile
	be            binary.ByteOrder
	maxlen, first int64
	incompat      uint32
}

type jtag struct {
	blk int64
	jb  jblock
}

// next is the journal block n after pos (the log wraps to first).
func (w *jwalk) next(pos, n int64) int64 {
	pos += n
	for pos >= w.maxlen {
		pos = w.first + pos - w.maxlen
	}
	return pos
}

// walk reads transactions from start while their blocks carry the
// expected sequence numbers, then applies the committed ones in order,
// leaving out blocks a later (or the same) transaction revoked.
func (w *jwalk) walk(start int64, seq uint32) (map[int64]jblock, int, error) {
	var txns [][]jtag
	var pending []jtag
	revoked := map[int64]uint32{}
	buf := make([]byte, w.f.bs)
	pos := start
	for steps := int64(0); steps < w.maxlen; {
		if _, err := w.j.ReadAt(buf, pos*w.f.bs); err != nil && err != io.EOF {
			return nil, 0, err
		}
		if w.be.Uint32(buf) != jbdMagic || w.be.Uint32(buf[8:]) != seq {
			break // the end of the log
		}
		switch w.be.Uint32(buf[4:]) {
		case jbdDescriptor:
			tags, err := w.tags(buf, pos)
			if err != nil {
				return nil, 0, err
			}
			pending = append(pending, tags...)
			steps += 1 + int64(len(tags))
			pos = w.next(pos, 1+int64(len(tags)))
		case jbdCommit:
			txns = append(txns, pending)
			pending = nil
			seq++
			steps++
			pos = w.next(pos, 1)
		case jbdRevoke:
			if err := w.revokes(buf, seq, revoked); err != nil {
				return nil, 0, err
			}
			steps++
			pos = w.next(pos, 1)
		default:
			steps = w.maxlen
		}
	}
	first := seq - uint32(len(txns)) // the first committed transaction's sequence
	m := map[int64]jblock{}
	for i, tags := range txns {
		s := first + uint32(i)
		for _, t := range tags {
			if r, ok := revoked[t.blk]; ok && r >= s && r < seq { // only committed revokes count
				continue
			}
			m[t.blk] = t.jb
		}
	}
	return m, len(txns), nil
}

// tags parses a descriptor block: the filesystem block each following
// journal block belongs to.
func (w *jwalk) tags(b []byte, pos int64) ([]jtag, error) {
	size, end := 8, len(b)
	switch {
	case w.incompat&jbdIncompatCsumV3 != 0:
		size = 16
	case w.incompat&jbdIncompat64 != 0:
		size = 12
	}
	if w.incompat&(jbdIncompatCsumV2|jbdIncompatCsumV3) != 0 {
		end -= 4 // the block's checksum tail
	}
	var out []jtag
	for off, n := 12, int64(1); off+size <= end; n++ {
		t := b[off:]
		blk := int64(w.be.Uint32(t))
		var flags uint32
		if size == 16 {
			flags = w.be.Uint32(t[4:])
			blk |= int64(w.be.Uint32(t[8:])) << 32
		} else {
			flags = uint32(w.be.Uint16(t[6:]))
			if size == 12 {
				blk |= int64(w.be.Uint32(t[8:])) << 32
			}
		}
		if blk <= 0 || blk >= w.f.blocks {
			return nil, damaged("ext: journal tag for block %d outside the filesystem", blk)
		}
		out = append(out, jtag{blk: blk, jb: jblock{pos: w.next(pos, n), escape: flags&jbdTagEscape != 0}})
		off += size
		if flags&jbdTagSameUUID == 0 {
			off += 16
		}
		if flags&jbdTagLast != 0 {
			break
		}
	}
	return out, nil
}

// revokes records a revoke block's blocks as revoked by transaction seq.
func (w *jwalk) revokes(b []byte, seq uint32, revoked map[int64]uint32) error {
	count := int(w.be.Uint32(b[12:]))
	rs := 4
	if w.incompat&jbdIncompat64 != 0 {
		rs = 8
	}
	if count < 16 || count > len(b) {
		return damaged("ext: journal revoke block of %d bytes", count)
	}
	for off := 16; off+rs <= count; off += rs {
		blk := int64(w.be.Uint32(b[off:]))
		if rs == 8 {
			blk = int64(w.be.Uint64(b[off:]))
		}
		if r, ok := revoked[blk]; !ok || r < seq {
			revoked[blk] = seq
		}
	}
	return nil
}

// journalOverlay reads a volume with the journal's committed blocks in
// place of their stale homes.
type journalOverlay struct {
	r  io.ReaderAt
	j  *extFile
	bs int64
	m  map[int64]jblock
}

// ReadAt implements io.ReaderAt: runs of blocks not in the journal are
// read from the volume in one call.
func (o *journalOverlay) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		blk, in := pos/o.bs, pos%o.bs
		jb, ok := o.m[blk]
		if !ok {
			end := blk + 1
			for end*o.bs < off+int64(len(p)) {
				if _, hit := o.m[end]; hit {
					break
				}
				end++
			}
			k := int(min(int64(len(p)-n), end*o.bs-pos))
			m, err := o.r.ReadAt(p[n:n+k], pos)
			n += m
			if err != nil {
				return n, err
			}
			continue
		}
		b := make([]byte, o.bs)
		if _, err := o.j.ReadAt(b, jb.pos*o.bs); err != nil && err != io.EOF {
			return n, fmt.Errorf("ext: journal block %d: %w", jb.pos, err)
		}
		if jb.escape {
			binary.BigEndian.PutUint32(b, jbdMagic)
		}
		n += copy(p[n:], b[in:])
	}
	return n, nil
}

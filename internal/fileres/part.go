package fileres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Partition is one entry of a partition table.
type Partition struct {
	Index int    // 1-based, as Linux numbers them (MBR logical partitions from 5)
	Start int64  // byte offset in the image
	Size  int64  // bytes
	Type  string // "mbr 0x83", "gpt 0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	Name  string // GPT partition name
}

const sector = 512

// Partition table limits: entries read from an image are bounded before
// anything is allocated for them.
const (
	maxGPTEntries = 256
	maxLogical    = 128
)

// ReadPartitions reads a GPT (preferred when its protective MBR is there)
// or an MBR partition table from an image of size bytes. ok is false when
// the image has neither (a filesystem on the whole disk).
func ReadPartitions(r io.ReaderAt, size int64) (parts []Partition, kind string, ok bool, err error) {
	mbr := make([]byte, sector)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		if err == io.EOF {
			return nil, "", false, nil
		}
		return nil, "", false, err
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, "", false, nil
	}
	if mbr[446+4] == 0xEE { // a protective MBR: the disk is GPT
		parts, err := readGPT(r, size, 1)
		if err == nil {
			return parts, "gpt", true, nil
		}
		// The backup header in the disk's last sector, as gdisk and
		// the kernel fall back to it.
		if bparts, berr := readGPT(r, size, size/sector-1); berr == nil {
			return bparts, "gpt (backup header; the primary: " + err.Error() + ")", true, nil
		}
		return nil, "gpt", false, err
	}
	if looksLikeBootSector(mbr) {
		return nil, "", false, nil // a FAT boot sector also ends in 55 AA
	}
	parts, err = readMBR(r, size)
	return parts, "mbr", err == nil, err
}

// looksLikeBootSector: a FAT or NTFS volume's boot sector, not an MBR.
func looksLikeBootSector(b []byte) bool {
	return bytes.Equal(b[82:87], []byte("FAT32")) || bytes.Equal(b[54:59], []byte("FAT12")) ||
		bytes.Equal(b[54:59], []byte("FAT16")) || bytes.Equal(b[3:11], []byte("NTFS    "))
}

func readMBR(r io.ReaderAt, size int64) ([]Partition, error) {
	b := make([]byte, sector)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, err
	}
	var parts []Partition
	for i := range 4 {
		e := b[446+16*i:]
		typ, lba, count := e[4], int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || count == 0 {
			continue
		}
		if typ == 0x05 || typ == 0x0F || typ == 0x85 {
			logical, err := readEBRs(r, size, lba)
			if err != nil {
				return nil, err
			}
			parts = append(parts, logical...)
			continue
		}
		p := Partition{Index: i + 1, Start: lba * sector, Size: count * sector, Type: fmt.Sprintf("mbr 0x%02x", typ)}
		if err := checkExtent(p, size); err != nil {
			return nil, err
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// readEBRs follows the chain of extended boot records from the extended
// partition at base (in sectors); logical partitions number from 5.
func readEBRs(r io.ReaderAt, size int64, base int64) ([]Partition, error) {
	var parts []Partition
	b := make([]byte, sector)
	seen := map[int64]bool{}
	for next := base; ; {
		if len(parts) >= maxLogical || seen[next] {
			return nil, damaged("mbr: extended partition chain loops or has over %d entries", maxLogical)
		}
		seen[next] = true
		if next*sector+sector > size {
			return nil, damaged("mbr: extended boot record at sector %d beyond the disk", next)
		}
		if _, err := r.ReadAt(b, next*sector); err != nil {
			return nil, err
		}
		if b[510] != 0x55 || b[511] != 0xAA {
			return nil, damaged("mbr: extended boot record at sector %d has no signature", next)
		}
		e1, e2 := b[446:], b[462:]
		if e1[4] != 0 {
			p := Partition{Index: 5 + len(parts), Start: (next + int64(binary.LittleEndian.Uint32(e1[8:]))) * sector,
				Size: int64(binary.LittleEndian.Uint32(e1[12:])) * sector, Type: fmt.Sprintf("mbr 0x%02x", e1[4])}
			if err := checkExtent(p, size); err != nil {
				return nil, err
			}
			parts = append(parts, p)
		}
		if e2[4] == 0 {
			return parts, nil
		}
		next = base + int64(binary.LittleEndian.Uint32(e2[8:]))
	}
}

func checkExtent(p Partition, size int64) error {
	if p.Start < 0 || p.Size < 0 || p.Start > size || p.Size > size-p.Start {
		return damaged("partition %d (%d bytes at %d) lies beyond the %d-byte disk", p.Index, p.Size, p.Start, size)
	}
	return nil
}

// readGPT reads the GPT header at lba (1, or the backup at the disk's
// end) and its entries, checking both CRCs.
func readGPT(r io.ReaderAt, size, lba int64) ([]Partition, error) {
	h := make([]byte, sector)
	if lba < 1 || lba*sector+sector > size {
		return nil, damaged("gpt: header LBA %d outside the disk", lba)
	}
	if _, err := r.ReadAt(h, lba*sector); err != nil {
		return nil, err
	}
	if string(h[:8]) != "EFI PART" {
		return nil, damaged("gpt: protective MBR but no GPT header at LBA %d", lba)
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || hsize > sector {
		return nil, damaged("gpt: header size %d", hsize)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	clear(hc[16:20])
	if crc32.ChecksumIEEE(hc) != want {
		return nil, damaged("gpt: header CRC mismatch")
	}
	ents := int64(binary.LittleEndian.Uint64(h[72:]))
	n := binary.LittleEndian.Uint32(h[80:])
	esz := binary.LittleEndian.Uint32(h[84:])
	if n > maxGPTEntries || esz < 128 || esz > 1024 || esz%8 != 0 {
		return nil, unsupported("gpt: %d entries of %d bytes", n, esz)
	}
	tbl := make([]byte, int(n)*int(esz))
	if ents <= 0 || ents > (size-int64(len(tbl)))/sector {
		return nil, damaged("gpt: entry array at LBA %d beyond the disk", ents)
	}
	if _, err := r.ReadAt(tbl, ents*sector); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(tbl) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, damaged("gpt: partition entry array CRC mismatch")
	}
	return gptEntries(tbl, int(esz), size)
}

func gptEntries(tbl []byte, esz int, size int64) ([]Partition, error) {
	var parts []Partition
	for i := 0; i*esz < len(tbl); i++ {
		e := tbl[i*esz : (i+1)*esz]
		if allZero(e[:16]) {
			continue
		}
		first, last := int64(binary.LittleEndian.Uint64(e[32:])), int64(binary.LittleEndian.Uint64(e[40:]))
		if first < 0 || last < first || last >= size/sector {
			return nil, damaged("gpt: partition %d spans LBA %d-%d on a disk of %d sectors", i+1, first, last, size/sector)
		}
		parts = append(parts, Partition{Index: i + 1, Start: first * sector, Size: (last - first + 1) * sector,
			Type: "gpt " + guidString(e[:16]), Name: utf16Name(e[56:128])})
	}
	return parts, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guidString formats a mixed-endian GPT GUID.
func guidString(g []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(g), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

func utf16Name(b []byte) string {
	var rs []rune
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		rs = append(rs, rune(c))
	}
	return string(rs)
}

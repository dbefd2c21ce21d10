package repo

import (
	"encoding/binary"
	"fmt"
)

// BlobType says what a blob in a pack holds.
type BlobType uint8

// Blob types.
const (
	BlobChunk BlobType = 1 // a chunk of a disk image
	BlobPage  BlobType = 2 // an index page of a manifest's slot tree
)

func (t BlobType) valid() bool { return t == BlobChunk || t == BlobPage }

// String implements fmt.Stringer.
func (t BlobType) String() string {
	switch t {
	case BlobChunk:
		return "chunk"
	case BlobPage:
		return "page"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Blob flags: the codec that compressed a blob's plaintext before
// sealing (none: stored as read). At most one is set.
const (
	flagZstd = 1
	flagLZ4  = 2
)

// validFlags reports whether f names at most one known codec.
func validFlags(f uint8) bool { return f == 0 || f == flagZstd || f == flagLZ4 }

// packEntry describes one blob in a pack.
type packEntry struct {
	Type   BlobType
	Flags  uint8
	ID     ID
	Offset uint32 // from the start of the pack
	Stored uint32 // bytes in the pack (sealed)
	Raw    uint32 // plaintext length
}

// Pack layout:
//
//	blob 0 | blob 1 | ... | seal(header) | headerLen u32 | "BWPK"
//
// header = "BWPH" | version u8 | count u32 | count × entry
// entry  = type u8 | flags u8 | raw u32 | stored u32 | id [32]   (42 bytes)
//
// Blob offsets are implicit: blobs are laid end to end from offset 0 in
// header order. The header sits at the end so a pack is written in one
// streaming pass; the trailer's fixed size lets a reader find it with one
// ranged load. A pack's name is the BLAKE3 hash of all its bytes.
const (
	packMagic       = "BWPK"
	packHeaderMagic = "BWPH"
	packVersion     = 1
	packTrailerSize = 8
	packEntrySize   = 42
	// maxPackEntries bounds what a decoder will allocate for.
	maxPackEntries = 1 << 20
)

func encodePackHeader(entries []packEntry) []byte {
	b := append([]byte(packHeaderMagic), packVersion)
	b = putU32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, byte(e.Type), e.Flags)
		b = putU32(b, e.Raw)
		b = putU32(b, e.Stored)
		b = append(b, e.ID[:]...)
	}
	return b
}

// decodePackHeader parses a header and assigns offsets. dataLen is the
// number of bytes in the pack before the sealed header; entries must fit.
func decodePackHeader(b []byte, dataLen uint64) ([]packEntry, error) {
	r := &reader{b: b}
	if string(r.take(4)) != packHeaderMagic || r.u8() != packVersion {
		return nil, fmt.Errorf("pack header: bad magic or version: %w", ErrCorrupt)
	}
	n := r.u32()
	if r.err != nil || n > maxPackEntries || uint64(n)*packEntrySize != uint64(len(r.b)) {
		return nil, fmt.Errorf("pack header: %d entries in %d bytes: %w", n, len(r.b), ErrCorrupt)
	}
	entries := make([]packEntry, n)
	var off uint64
	for i := range entries {
		e := packEntry{Type: BlobType(r.u8()), Flags: r.u8(), Raw: r.u32(), Stored: r.u32(), ID: r.id()}
		if !e.Type.valid() || !validFlags(e.Flags) || e.Stored == 0 || off+uint64(e.Stored) > dataLen {
			return nil, fmt.Errorf("pack header: bad entry %d: %w", i, ErrCorrupt)
		}
		e.Offset = uint32(off)
		off += uint64(e.Stored)
		entries[i] = e
	}
	if off != dataLen {
		return nil, fmt.Errorf("pack header: entries cover %d of %d bytes: %w", off, dataLen, ErrCorrupt)
	}
	return entries, r.done()
}

func encodePackTrailer(hdrLen int) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(hdrLen)), packMagic...)
}

// decodePackTrailer returns the sealed header's length.
func decodePackTrailer(b []byte, packSize int64) (int64, error) {
	if len(b) != packTrailerSize || string(b[4:]) != packMagic {
		return 0, fmt.Errorf("pack trailer: bad magic: %w", ErrCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(b))
	if n > packSize-packTrailerSize {
		return 0, fmt.Errorf("pack trailer: header length %d beyond pack: %w", n, ErrCorrupt)
	}
	return n, nil
}

// blobAD binds a sealed blob to its type and ID, so a blob moved or
// swapped inside or between packs fails authentication.
func blobAD(t BlobType, id ID) []byte { return append([]byte{byte(t)}, id[:]...) }

// packID names a pack by the hash of its sealed header and trailer. The
// header lists every blob's type, ID, flags and size and must tile the
// body exactly, and each blob is authenticated and re-hashed against its
// ID when read, so the name still commits to every byte; hashing the
// whole pack as well cost a twentieth of a full backup's CPU.
func packID(headerAndTrailer []byte) ID { return fileID(headerAndTrailer) }

// parsePack splits a whole pack file into its entries, checking its name
// (the hash of header and trailer, or of the whole file for packs written
// before that).
func (r *Repository) parsePack(name ID, data []byte) ([]packEntry, error) {
	if len(data) < packTrailerSize {
		return nil, fmt.Errorf("pack %v: too short: %w", name.Short(), ErrCorrupt)
	}
	hl, err := decodePackTrailer(data[len(data)-packTrailerSize:], int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("pack %v: %w", name.Short(), err)
	}
	dataLen := int64(len(data)) - packTrailerSize - hl
	if packID(data[dataLen:]) != name && fileID(data) != name {
		return nil, fmt.Errorf("pack %v: content hash mismatch: %w", name.Short(), ErrCorrupt)
	}
	return r.openPackHeader(name, data[dataLen:dataLen+hl], dataLen)
}

// openPackHeader authenticates a pack's sealed header and decodes its
// entries, which must tile the dataLen bytes before it.
func (r *Repository) openPackHeader(name ID, sealed []byte, dataLen int64) ([]packEntry, error) {
	hdr, err := r.crypt.open(sealed, []byte(packHeaderMagic))
	if err != nil {
		return nil, fmt.Errorf("pack %v: header: %w", name.Short(), err)
	}
	entries, err := decodePackHeader(hdr, uint64(dataLen))
	if err != nil {
		return nil, fmt.Errorf("pack %v: %w", name.Short(), err)
	}
	return entries, nil
}

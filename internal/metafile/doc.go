// Package metafile frames blockwise's metadata files: an 8-byte magic, a
// format version, the body length and a CRC-32C of the body, so every file
// is validated on open and a torn or foreign file is an error, never a
// silent misread.
//
// Layout (little endian):
//
//	0  magic   [8]byte
//	8  version uint16
//	10 flags   uint16 (zero)
//	12 length  uint32  body length
//	16 crc     uint32  CRC-32C (Castagnoli) of body
//	20 body    [length]byte
package metafile

package metafile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of the frame before the body.
const HeaderSize = 20

// ErrCorrupt reports a file that fails validation.
var ErrCorrupt = errors.New("corrupt metadata")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC-32C used by every blockwise format.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Encode frames body.
func Encode(magic string, version uint16, body []byte) []byte {
	out := make([]byte, HeaderSize+len(body))
	copy(out[:8], magic)
	binary.LittleEndian.PutUint16(out[8:], version)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(body)))
	binary.LittleEndian.PutUint32(out[16:], Checksum(body))
	copy(out[HeaderSize:], body)
	return out
}

// Decode validates a framed file and returns its version and body. name is
// used in the error message only.
func Decode(name, magic string, maxVersion uint16, data []byte) (uint16, []byte, error) {
	if len(data) < HeaderSize {
		return 0, nil, fmt.Errorf("%s: %w: truncated header (%d bytes)", name, ErrCorrupt, len(data))
	}
	if string(data[:8]) != magic {
		return 0, nil, fmt.Errorf("%s: %w: bad magic %q", name, ErrCorrupt, data[:8])
	}
	version := binary.LittleEndian.Uint16(data[8:])
	if version == 0 || version > maxVersion {
		return 0, nil, fmt.Errorf("%s: %w: unsupported version %d", name, ErrCorrupt, version)
	}
	n := binary.LittleEndian.Uint32(data[12:])
	if uint64(n) != uint64(len(data)-HeaderSize) {
		return 0, nil, fmt.Errorf("%s: %w: length %d, file has %d", name, ErrCorrupt, n, len(data)-HeaderSize)
	}
	body := data[HeaderSize:]
	if Checksum(body) != binary.LittleEndian.Uint32(data[16:]) {
		return 0, nil, fmt.Errorf("%s: %w: checksum mismatch", name, ErrCorrupt)
	}
	return version, body, nil
}

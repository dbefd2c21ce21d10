package repo

import (
	"encoding/binary"
	"fmt"
)

// Every metadata file (index, manifest, lock) is an envelope:
//
//	magic [4] | version u8 | seal(body, ad = magic|version)
//
// The clear prefix lets tools tell file kinds apart without keys; binding
// it as associated data stops a prefix swap from going unnoticed.
const envelopeVersion = 1

func sealEnvelope(c *crypter, magic string, body []byte) []byte {
	hdr := append([]byte(magic), envelopeVersion)
	return append(hdr, c.seal(body, hdr)...)
}

func openEnvelope(c *crypter, magic string, data []byte) ([]byte, error) {
	if len(data) < 5 || string(data[:4]) != magic {
		return nil, fmt.Errorf("bad magic, want %q: %w", magic, ErrCorrupt)
	}
	if data[4] != envelopeVersion {
		return nil, fmt.Errorf("%s version %d unsupported: %w", magic, data[4], ErrCorrupt)
	}
	return c.open(data[5:], data[:5])
}

// openEnvelopeInPlace is openEnvelope decrypting over data's memory.
func openEnvelopeInPlace(c *crypter, magic string, data []byte) ([]byte, error) {
	if len(data) < 5 || string(data[:4]) != magic {
		return nil, fmt.Errorf("bad magic, want %q: %w", magic, ErrCorrupt)
	}
	if data[4] != envelopeVersion {
		return nil, fmt.Errorf("%s version %d unsupported: %w", magic, data[4], ErrCorrupt)
	}
	return c.openInPlace(data[5:], data[:5])
}

// reader is a bounds-checked little-endian decoder: decoders of outside
// bytes must never panic or allocate from an unchecked length.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("truncated: %w", ErrCorrupt)
		}
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) id() (id ID) {
	copy(id[:], r.take(32))
	return id
}

// done reports trailing garbage as corruption.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes: %w", len(r.b), ErrCorrupt)
	}
	return r.err
}

func putU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

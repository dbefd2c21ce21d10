package metafile

import "encoding/binary"

// Reader consumes a metadata body from untrusted bytes. The first read
// past the end sets Short; reads after it return zero values, so a decoder
// reads every field and checks once.
type Reader struct {
	b     []byte
	Short bool
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Bytes takes the next n bytes (nil once short).
func (r *Reader) Bytes(n int) []byte {
	if r.Short || n < 0 || n > len(r.b) {
		r.Short = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// U32 takes a little-endian uint32.
func (r *Reader) U32() uint32 {
	if b := r.Bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// U64 takes a little-endian uint64.
func (r *Reader) U64() uint64 {
	if b := r.Bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Prefixed takes a uint32 length and that many bytes.
func (r *Reader) Prefixed() []byte { return r.Bytes(int(r.U32())) }

// Rest is how many bytes are left.
func (r *Reader) Rest() int { return len(r.b) }

package replica

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A batch body is a sequence of frames (docs/replication.md, "Batch
// body"), zstd-compressed as a whole when Content-Encoding says so:
//
//	kind   u8   1 data, 2 zeroes
//	offset u64  big-endian, byte offset in the disk
//	length u32  big-endian, 1 .. maxFrame
//	data   length bytes (kind 1 only)
const (
	frameData  = 1
	frameZero  = 2
	frameHead  = 13
	maxFrame   = 4 << 20
	sectorSize = 512
)

// ErrBadFrame is a batch body that does not parse or leaves the disk.
var ErrBadFrame = errors.New("bad replication frame")

// frame is one decoded frame; data aliases the reader's buffer.
type frame struct {
	kind   byte
	off    int64
	length int64
	data   []byte
}

func appendFrame(dst []byte, kind byte, off int64, data []byte, length int64) []byte {
	var h [frameHead]byte
	h[0] = kind
	binary.BigEndian.PutUint64(h[1:], uint64(off))
	binary.BigEndian.PutUint32(h[9:], uint32(length))
	dst = append(dst, h[:]...)
	if kind == frameData {
		dst = append(dst, data...)
	}
	return dst
}

// frameReader decodes frames of a disk of size bytes, each at or after
// the previous one's end, all within [from, to).
type frameReader struct {
	r        *bufio.Reader
	size     int64
	from, to int64
	buf      []byte
}

func newFrameReader(r io.Reader, size, from, to int64) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 1<<16), size: size, from: from, to: to}
}

// next returns the next frame, or io.EOF after the last one.
func (fr *frameReader) next() (frame, error) {
	var h [frameHead]byte
	if _, err := io.ReadFull(fr.r, h[:1]); err != nil {
		return frame{}, err // io.EOF: a clean end between frames
	}
	if _, err := io.ReadFull(fr.r, h[1:]); err != nil {
		return frame{}, fmt.Errorf("%w: truncated header: %v", ErrBadFrame, err)
	}
	f := frame{kind: h[0], off: int64(binary.BigEndian.Uint64(h[1:])), length: int64(binary.BigEndian.Uint32(h[9:]))}
	if err := fr.check(f); err != nil {
		return frame{}, err
	}
	fr.from = f.off + f.length
	if f.kind == frameZero {
		return f, nil
	}
	if int64(cap(fr.buf)) < f.length {
		fr.buf = make([]byte, f.length)
	}
	f.data = fr.buf[:f.length]
	if _, err := io.ReadFull(fr.r, f.data); err != nil {
		return frame{}, fmt.Errorf("%w: truncated data at %d: %v", ErrBadFrame, f.off, err)
	}
	return f, nil
}

func (fr *frameReader) check(f frame) error {
	switch {
	case f.kind != frameData && f.kind != frameZero:
		return fmt.Errorf("%w: kind %d", ErrBadFrame, f.kind)
	case f.length <= 0 || f.length > maxFrame:
		return fmt.Errorf("%w: length %d", ErrBadFrame, f.length)
	case f.off < 0 || f.off%sectorSize != 0 || f.length%sectorSize != 0:
		return fmt.Errorf("%w: [%d, +%d) not sector-aligned", ErrBadFrame, f.off, f.length)
	case f.off < fr.from || f.off+f.length > fr.to || f.off+f.length > fr.size:
		return fmt.Errorf("%w: [%d, +%d) outside the batch [%d, %d) of a %d-byte disk", ErrBadFrame, f.off, f.length, fr.from, fr.to, fr.size)
	}
	return nil
}

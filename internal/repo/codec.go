package repo

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression settings, as restic and borg name them. A repository has a
// default (Config.Compression, chosen at Init) and every writer may pick
// another (Options.Compression): each blob records its own codec in its
// entry's flags (flagZstd, flagLZ4; docs/repository.md, Blobs), so
// one repository mixes them and a reader never depends on settings.
const (
	CompressionAuto = "auto" // zstd SpeedFastest, skipping chunks whose sample looks incompressible (the default)
	CompressionMax  = "max"  // zstd SpeedBetterCompression on every chunk: smaller, ~3× slower
	CompressionLZ4  = "lz4"  // LZ4 block, skipping incompressible chunks: for fast links and slow CPUs
	CompressionOff  = "off"  // stored as read

	// Names of repositories made before the choice; still accepted.
	CompressionNone    = "none"    // = off
	CompressionFastest = "fastest" // = auto
	CompressionDefault = "default" // zstd SpeedDefault, skipping incompressible chunks
)

// compressionNames maps every accepted name to its canonical one.
var compressionNames = map[string]string{
	CompressionAuto: CompressionAuto, CompressionFastest: CompressionAuto,
	CompressionMax: CompressionMax, CompressionDefault: CompressionDefault,
	CompressionLZ4: CompressionLZ4, CompressionOff: CompressionOff, CompressionNone: CompressionOff,
}

// CanonicalCompression returns the canonical name of a compression
// setting, or an error wrapping ErrInvalid for an unknown one.
func CanonicalCompression(name string) (string, error) {
	if c, ok := compressionNames[name]; ok {
		return c, nil
	}
	return "", fmt.Errorf("compression %q unknown (auto, max, lz4, off): %w", name, ErrInvalid)
}

// codec compresses blobs with one setting; it is safe for concurrent use
// (packer workers compress in parallel).
type codec struct {
	name    string
	zenc    *zstd.Encoder // zstd settings
	lz4     bool
	skipRaw bool // test a sample's entropy first (all but max)
	lzPool  sync.Pool
}

func newCodec(name string, maxBlob uint32) (*codec, error) {
	name, err := CanonicalCompression(name)
	if err != nil {
		return nil, err
	}
	c := &codec{name: name, skipRaw: name != CompressionMax}
	switch name {
	case CompressionOff:
	case CompressionLZ4:
		c.lz4 = true
		c.lzPool.New = func() any { return new(lz4.Compressor) }
	default:
		lvl := map[string]zstd.EncoderLevel{CompressionAuto: zstd.SpeedFastest,
			CompressionDefault: zstd.SpeedDefault, CompressionMax: zstd.SpeedBetterCompression}[name]
		// A window no larger than a blob: chunks are compressed one by
		// one, and a large default window costs a big copy per call.
		win := max(zstd.MinWindowSize, 1<<bits.Len32(maxBlob-1))
		c.zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), // EncodeAll calls run in parallel up to this
			zstd.WithEncoderCRC(false),                         // every chunk is verified against its keyed hash anyway
			zstd.WithWindowSize(min(win, zstd.MaxWindowSize)))
	}
	return c, err
}

// compress returns plain compressed into s with its flag when that
// shrinks it, else plain itself and no flag.
func (c *codec) compress(plain []byte, s *blobScratch) ([]byte, uint8) {
	if c.name == CompressionOff || (c.skipRaw && !compressible(plain)) {
		return plain, 0
	}
	if c.lz4 {
		s.z = growTo(s.z, lz4.CompressBlockBound(len(plain)))
		lc := c.lzPool.Get().(*lz4.Compressor)
		n, err := lc.CompressBlock(plain, s.z)
		c.lzPool.Put(lc)
		if err != nil || n == 0 || n >= len(plain) {
			return plain, 0 // n == 0: incompressible, by lz4's contract
		}
		return s.z[:n], flagLZ4
	}
	if s.z = c.zenc.EncodeAll(plain, s.z[:0]); len(s.z) < len(plain) {
		return s.z, flagZstd
	}
	return plain, 0
}

func (c *codec) close() {
	if c.zenc != nil {
		c.zenc.Close()
	}
}

// growTo returns b with length n, reusing its memory when it is large enough.
func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// uncompressLZ4 decodes an LZ4 block into out, which must end up exactly raw bytes long.
func uncompressLZ4(data, out []byte, raw int) ([]byte, error) {
	out = growTo(out, raw)
	n, err := lz4.UncompressBlock(data, out)
	if err != nil {
		return nil, err
	}
	if n != raw {
		return nil, fmt.Errorf("lz4: %d bytes, want %d", n, raw)
	}
	return out[:n], nil
}

// Codec is one compression setting on its own, outside any repository:
// what `bench/backup.sh` measures as the codec's limit ("the codec
// alone") beside the backup that uses it. Safe for concurrent use.
type Codec struct{ c *codec }

// NewCodec returns the codec of a compression setting for chunks of at
// most maxChunk bytes.
func NewCodec(setting string, maxChunk uint32) (*Codec, error) {
	c, err := newCodec(setting, maxChunk)
	return &Codec{c}, err
}

// CompressedLen compresses chunk exactly as a backup would and returns
// the stored length (len(chunk) when it is stored as read).
func (c *Codec) CompressedLen(chunk []byte) int {
	s := scratchPool.Get().(*blobScratch)
	defer scratchPool.Put(s)
	out, _ := c.c.compress(chunk, s)
	return len(out)
}

// Close releases the codec's encoders.
func (c *Codec) Close() { c.c.close() }

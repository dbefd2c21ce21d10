package repo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/backend"
)

// blobScratch is the working space of compressBlob and decodeBlobTo,
// recycled: a full backup compresses every chunk it reads, and fresh
// buffers per chunk cost more in zeroing, page faults and garbage
// collection than the work itself.
type blobScratch struct{ z, sealed []byte }

var scratchPool = sync.Pool{New: func() any { return new(blobScratch) }}

// compressBlob returns plain compressed into s with its codec's flag
// when that shrinks it, else plain itself.
func (r *Repository) compressBlob(plain []byte, s *blobScratch) ([]byte, uint8) {
	return r.codec.compress(plain, s)
}

// compressible estimates from a sample whether zstd can shrink p: random
// or already-compressed data has close to 8 bits of entropy per byte, and
// trying to compress it costs the backup's biggest share of CPU for
// nothing. The sample (every 16th byte, at most entropySamples bytes)
// misses repeats of high-entropy runs inside one chunk; whole repeated
// chunks are deduplicated anyway.
func compressible(p []byte) bool {
	if len(p) < 4096 {
		return true
	}
	stride := max(16, (len(p)+entropySamples-1)/entropySamples)
	var hist [256]int
	n := 0
	for i := 0; i < len(p); i += stride {
		hist[p[i]]++
		n++
	}
	return sampleEntropy(&hist, n) < 7.5
}

// entropySamples bounds the sample, so that c·log2(c) comes from a table.
const entropySamples = 4096

// clog2c[c] = c·log2(c): the entropy of a sample of n bytes is
// log2(n) − Σ c·log2(c) / n over the byte counts c, with no logarithm
// per count (they were 1.5% of a full backup's CPU).
var clog2c = func() (t [entropySamples + 1]float64) {
	for c := 1; c <= entropySamples; c++ {
		t[c] = float64(c) * math.Log2(float64(c))
	}
	return t
}()

func sampleEntropy(hist *[256]int, n int) float64 {
	sum := 0.0
	for _, c := range hist {
		sum += clog2c[c]
	}
	return math.Log2(float64(n)) - sum/float64(n)
}

// decodeBlob reverses compression and sealing (packer.add) and verifies the plaintext against id.
// The result is fresh memory or, unencrypted and uncompressed, stored
// itself.
func (r *Repository) decodeBlob(e packEntry, pack ID, stored []byte) ([]byte, error) {
	return r.decodeBlobTo(e, pack, stored, nil)
}

// decodeSlack is spare capacity given to the zstd decoder beyond a blob.
const decodeSlack = 4 << 10

// decodeBlobTo is decodeBlob writing the plaintext into dst[:e.Raw] when
// dst is not nil (a restore decodes into its write buffer, without a
// fresh chunk-sized allocation). stored is not modified.
func (r *Repository) decodeBlobTo(e packEntry, pack ID, stored, dst []byte) ([]byte, error) {
	if e.Raw > r.maxBlob() || (dst != nil && int(e.Raw) > len(dst)) {
		return nil, blobErr(e, pack, fmt.Errorf("raw length %d too large: %w", e.Raw, ErrCorrupt))
	}
	if dst != nil {
		dst = dst[:0]
	}
	compressed := e.Flags&(flagZstd|flagLZ4) != 0
	data := stored
	var s *blobScratch
	if compressed || r.crypt.encrypted() {
		s = scratchPool.Get().(*blobScratch)
		defer scratchPool.Put(s)
	}
	if r.crypt.encrypted() {
		into := dst // uncompressed: the plaintext's final place
		if compressed {
			into = s.sealed[:0]
		}
		var err error
		if data, err = r.crypt.openTo(into, stored, blobAD(e.Type, e.ID)); err != nil {
			return nil, blobErr(e, pack, err)
		}
		if compressed {
			s.sealed = data
		}
	}
	if compressed {
		var err error
		if data, err = r.decompress(e, data, dst, s); err != nil {
			return nil, blobErr(e, pack, err)
		}
	} else if dst != nil && !r.crypt.encrypted() {
		data = append(dst, data...)
	}
	if uint32(len(data)) != e.Raw || r.crypt.blobID(data) != e.ID {
		return nil, blobErr(e, pack, fmt.Errorf("content does not match id: %w", ErrCorrupt))
	}
	return data, nil
}

// decompress decodes data (blob e) into dst when dst has the room to
// spare past the output that the decoder's fast path needs (a chunk
// cache buffer), else into fresh memory (dst nil) or into s's scratch
// copied into dst (whose capacity ends with its slot).
func (r *Repository) decompress(e packEntry, data, dst []byte, s *blobScratch) ([]byte, error) {
	inPlace := dst != nil && cap(dst) >= int(e.Raw)+decodeSlack
	var out []byte
	switch {
	case inPlace:
		out = dst[:0]
	case dst != nil:
		out = slices.Grow(s.z[:0], int(e.Raw)+decodeSlack)
	default:
		out = make([]byte, 0, int(e.Raw)+decodeSlack)
	}
	var plain []byte
	var err error
	if e.Flags&flagLZ4 != 0 {
		plain, err = uncompressLZ4(data, out, int(e.Raw))
	} else {
		plain, err = r.zdec.DecodeAll(data, out)
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("decompress: %v: %w", err, ErrCorrupt)
	case len(plain) != int(e.Raw):
		return nil, fmt.Errorf("decompressed %d bytes, stored as %d: %w", len(plain), e.Raw, ErrCorrupt)
	case dst == nil:
		return plain, nil
	case inPlace && len(plain) > 0 && &plain[0] == &dst[:1][0]:
		return plain, nil // decoded where it belongs
	case !inPlace:
		s.z = plain
	}
	return append(dst[:0], plain...), nil // dst holds e.Raw (checked above)
}

func blobErr(e packEntry, pack ID, err error) error {
	return fmt.Errorf("%v %v in pack %v: %w", e.Type, e.ID.Short(), pack, err)
}

// maxBlob bounds a blob's plaintext: the largest of a chunk and a page.
func (r *Repository) maxBlob() uint32 {
	return max(r.cfg.ChunkSize, uint32(pageMaxSize(r.cfg.PageSlots)), treeGroupMax)
}

// loadBlobFrom fetches and verifies one blob by type and ID via index x.
func (r *Repository) loadBlobFrom(ctx context.Context, x *index, t BlobType, id ID) ([]byte, error) {
	loc, ok := x.lookup(t, id)
	if !ok {
		return nil, fmt.Errorf("%v %v: in no index file: %w (%w)", t, id.Short(), ErrIncomplete, ErrNotFound)
	}
	h := backend.Handle{Type: backend.Data, Name: loc.Pack.String()}
	stored, err := backend.LoadAll(ctx, r.be, h, int64(loc.Offset), int64(loc.Stored))
	if errors.Is(err, backend.ErrNotFound) {
		return nil, fmt.Errorf("%v %v: pack %v missing: %w (%w)", t, id.Short(), loc.Pack, ErrCorrupt, err)
	} else if err != nil {
		return nil, fmt.Errorf("load %v %v: %w", t, id.Short(), err)
	}
	return r.decodeBlob(loc.packEntry, loc.Pack, stored)
}

// zeros returns a shared all-zero buffer of one chunk, for zero
// detection and for reading zero slots. Callers must not modify it.
func (r *Repository) zeros() []byte {
	r.zeroOnce.Do(func() { r.zeroBuf = make([]byte, r.cfg.ChunkSize) })
	return r.zeroBuf
}

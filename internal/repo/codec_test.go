package repo

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestCompressionMixed writes one repository with every setting in turn
// (each process picks its own, as restic's --compression does): every
// point restores, check --read-data is clean, and each setting stored
// what it should (lz4 and zstd shrink text-like chunks, off stores them
// as read, max no larger than auto).
func TestCompressionMixed(t *testing.T) {
	be := mem.New()
	initRepo(t, be, testOptions())
	rng := rand.New(rand.NewPCG(5, 5))
	type point struct {
		m   *Manifest
		img []byte
	}
	var points []point
	stored := map[string]uint64{}
	for _, mode := range []string{CompressionAuto, CompressionLZ4, CompressionOff, CompressionMax, CompressionFastest} {
		s := testSettings()
		s.Compression = mode
		r, err := Open(context.Background(), be, testPassword, s)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		// Fresh data per setting, so each stores its own chunks.
		img := textLike(rng, 8<<20)
		m := backup(t, r, nil, img, nil)
		stored[mode] = m.Stats.StoredBytes
		points = append(points, point{m, img})
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(context.Background(), be, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		repotest.Verify(t, r.OpenImage, p.m.ID, p.img)
	}
	repotest.CheckClean(t, r.Check, CheckOptions{ReadData: true})
	if !(stored[CompressionLZ4] < stored[CompressionOff]*3/4 && stored[CompressionAuto] < stored[CompressionLZ4]) {
		t.Errorf("stored bytes auto %d, lz4 %d, off %d: want auto < lz4 < off", stored[CompressionAuto], stored[CompressionLZ4], stored[CompressionOff])
	}
	if stored[CompressionMax] > stored[CompressionAuto] {
		t.Errorf("max stored %d > auto %d", stored[CompressionMax], stored[CompressionAuto])
	}
}

// TestCompressionUnknown: an unknown setting is an invalid argument, at
// Init and at Open, and nothing is created.
func TestCompressionUnknown(t *testing.T) {
	be := mem.New()
	o := testOptions()
	o.Compression = "brotli"
	if _, err := Init(context.Background(), be, testPassword, o); !errors.Is(err, ErrInvalid) && err == nil {
		t.Fatalf("init with brotli: %v", err)
	}
	initRepo(t, be, testOptions())
	s := testSettings()
	s.Compression = "brotli"
	if _, err := Open(context.Background(), be, testPassword, s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("open with brotli: %v, want ErrInvalid", err)
	}
}

// TestCodecRoundTrip: each codec's blob decodes to its plaintext, and a
// flipped byte in an LZ4 blob is corrupt data, not a panic or a wrong answer.
func TestCodecRoundTrip(t *testing.T) {
	plain := textLike(rand.New(rand.NewPCG(1, 2)), 64<<10)
	for _, mode := range []string{CompressionAuto, CompressionMax, CompressionLZ4, CompressionOff} {
		t.Run(mode, func(t *testing.T) {
			c, err := newCodec(mode, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			data, flags := c.compress(plain, new(blobScratch))
			if (mode == CompressionOff) != (flags == 0) || !validFlags(flags) {
				t.Fatalf("flags %d for %s (%d of %d bytes, compressible %v)", flags, mode, len(data), len(plain), compressible(plain))
			}
			if flags == flagLZ4 {
				out, err := uncompressLZ4(data, nil, len(plain))
				if err != nil || string(out) != string(plain) {
					t.Fatalf("lz4 round trip: %v", err)
				}
				bad := append([]byte(nil), data...)
				bad[len(bad)/2] ^= 0xff
				if out, err := uncompressLZ4(bad, nil, len(plain)); err == nil && string(out) == string(plain) {
					t.Fatalf("flipped byte decoded to the plaintext")
				}
			}
		})
	}
}

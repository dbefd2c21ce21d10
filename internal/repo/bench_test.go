package repo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
	"github.com/klauspost/compress/zstd"
)

// textLike makes text-like data (words from a small vocabulary, like
// logs and config files) that zstd shrinks about 3-4x.
func textLike(rng *rand.Rand, n int) []byte {
	words := []string{"the ", "disk ", "block ", "error ", "info: ", "2026-11-25 ", "GET /api/v1/", "200 ", "\n", "user=", "id=", "{\"k\":", "}, "}
	b := make([]byte, 0, n+32)
	for len(b) < n {
		b = append(b, words[rng.IntN(len(words))]...)
		if rng.IntN(8) == 0 {
			b = strconv.AppendUint(b, rng.Uint64N(1e6), 10)
		}
	}
	return b[:n]
}

func BenchmarkPutChunk(b *testing.B) {
	for _, kind := range []string{"random", "compressible"} {
		b.Run(kind, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			pool := make([][]byte, 64)
			for i := range pool {
				if kind == "random" {
					pool[i] = make([]byte, 64<<10)
					repotest.Fill(rng, pool[i])
				} else {
					pool[i] = textLike(rng, 64<<10)
				}
			}
			r := initRepo(b, mem.New(), Options{KDF: testKDF})
			ctx := context.Background()
			w, err := r.NewWriter(ctx, nil, Meta{Size: uint64(max(b.N, 1)) << 16})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(64 << 10)
			b.ResetTimer()
			for i := range b.N {
				d := pool[i%len(pool)]
				d[0], d[1], d[2], d[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24) // defeat dedup
				if err := w.PutChunk(ctx, uint64(i), d); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			w.Abort(ctx)
		})
	}
}

func BenchmarkRestore(b *testing.B) {
	r := initRepo(b, mem.New(), Options{KDF: testKDF})
	img := repotest.Image(rand.New(rand.NewPCG(3, 4)), 64<<20, 64<<10, 0.1)
	m := backup(b, r, nil, img, nil)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	for range b.N {
		im, err := r.OpenImage(context.Background(), m.ID)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < im.Size(); off += int64(len(buf)) {
			if _, err := im.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkChunkSize is the chunk-size decision: a random image, then an
// incremental after 1% of its 64 KiB blocks changed at scattered places
// (the CBT granularity), for each candidate chunk size. It reports what
// the incremental stored relative to the bytes that changed, and how big
// the metadata (pages) is. Image size: BLOCKWISE_BENCH_IMAGE_MIB (256).
func BenchmarkChunkSize(b *testing.B) {
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("BLOCKWISE_BENCH_IMAGE_MIB")); err == nil {
		mib = v
	}
	base := repotest.Image(rand.New(rand.NewPCG(5, 6)), mib<<20, 64<<10, 0)
	for _, cs := range []uint32{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", cs>>10), func(b *testing.B) {
			for range b.N {
				chunkSizeRun(b, cs, base)
			}
		})
	}
}

func chunkSizeRun(b *testing.B, cs uint32, base []byte) {
	r := initRepo(b, mem.New(), Options{ChunkSize: cs, KDF: testKDF})
	img := append([]byte(nil), base...)
	full := backup(b, r, nil, img, nil)
	rng := rand.New(rand.NewPCG(7, 8))
	changed := repotest.Mutate(rng, img, 64<<10, 0.01)
	dirty := map[uint64]bool{}
	for _, blk := range changed {
		// Every chunk overlapping the changed 64 KiB block is re-sent.
		for off := uint64(blk) << 16; off < uint64(blk+1)<<16; off += uint64(min(cs, 64<<10)) {
			dirty[off/uint64(cs)] = true
		}
	}
	var slots []uint64
	for s := range dirty {
		slots = append(slots, s)
	}
	start := time.Now()
	inc := backup(b, r, full, img, slots)
	changedBytes := float64(len(changed) << 16)
	b.ReportMetric(float64(inc.Stats.StoredBytes)/(1<<20), "stored-MiB")
	b.ReportMetric(changedBytes/(1<<20), "changed-MiB")
	b.ReportMetric(float64(inc.Stats.StoredBytes)/changedBytes, "stored/changed")
	b.ReportMetric(float64(inc.Stats.NewPages), "pages-written")
	b.ReportMetric(float64(full.Stats.StoredBytes)/float64(len(img)), "full-stored/size")
	b.ReportMetric(time.Since(start).Seconds()*1000, "inc-ms")
}

// BenchmarkCompression compares zstd levels on 64 KiB chunks of text-like
// data and of random data (which must be detected as incompressible).
func BenchmarkCompression(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 9))
	text := textLike(rng, 16<<20)
	random := make([]byte, 16<<20)
	repotest.Fill(rng, random)
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
		for name, data := range map[string][]byte{"text": text, "random": random} {
			b.Run(fmt.Sprintf("%s/%s", lvl, name), func(b *testing.B) {
				enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1))
				var in, out int
				b.SetBytes(int64(len(data)))
				for range b.N {
					for off := 0; off < len(data); off += 64 << 10 {
						z := enc.EncodeAll(data[off:off+64<<10], nil)
						in, out = in+64<<10, out+min(len(z), 64<<10)
					}
				}
				b.ReportMetric(float64(in)/float64(out), "ratio")
			})
		}
	}
}

// BenchmarkListManifests: a round trip's latency on every load, as an
// object store has, shows what loading manifests several at a time saves
// a backup looking for its parent (one at a time, 64 manifests cost 64
// round trips).
func BenchmarkListManifests(b *testing.B) {
	ctx := context.Background()
	store := mem.New()
	r := initRepo(b, store, testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(5, 5)), 1<<20, 64<<10, 0)
	var parent *Manifest
	for range 64 {
		parent = backup(b, r, parent, img, []uint64{0})
	}
	slow := onLoad{store, func(backend.Handle) { time.Sleep(2 * time.Millisecond) }}
	r2, err := Open(ctx, slow, testPassword, testSettings())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if ms, err := r2.ListManifests(ctx); err != nil || len(ms) != 64 {
			b.Fatalf("%d manifests, %v", len(ms), err)
		}
	}
}

package main

import (
	"math/rand/v2"
	"strconv"
)

const block = 64 << 10

// realisticImage mixes 64 KiB blocks like a used VM disk: 35% holes,
// 25% random (encrypted or compressed data), 25% text-like (logs,
// config), 15% copies of earlier blocks shifted by a few bytes.
func realisticImage(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	img := make([]byte, size)
	for off := 0; off < size; off += block {
		b := img[off:min(off+block, size)]
		switch r := rng.Float64(); {
		case r < 0.35:
		case r < 0.60:
			randomFill(rng, b)
		case r < 0.85:
			textFill(rng, b)
		case off >= 2*block:
			src := rng.IntN(off/block-1) * block
			copy(b, img[src+rng.IntN(64)+1:])
		default:
			randomFill(rng, b)
		}
	}
	return img
}

func randomFill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

var words = []string{"GET", "POST", "/api/v1/items", "200", "404", "user", "session", "INFO", "WARN", "connection", "timeout", "kernel:", "systemd[1]:", "Started", "eth0", "{\"id\":", "\"name\":", "true", "false"}

func textFill(rng *rand.Rand, b []byte) {
	line := make([]byte, 0, 128)
	for i := 0; i < len(b); {
		line = line[:0]
		line = strconv.AppendInt(line, 1700000000+rng.Int64N(1e6), 10)
		for range 4 + rng.IntN(8) {
			line = append(line, ' ')
			line = append(line, words[rng.IntN(len(words))]...)
		}
		line = append(line, '\n')
		i += copy(b[i:], line)
	}
}

// mutate rewrites fraction of the blocks with random data and returns
// their slot numbers, as CBT would report them.
func mutate(img []byte, fraction float64, seed uint64) []uint64 {
	rng := rand.New(rand.NewPCG(seed, ^seed))
	n := (len(img) + block - 1) / block
	var slots []uint64
	for _, b := range rng.Perm(n)[:max(1, int(float64(n)*fraction))] {
		randomFill(rng, img[b*block:min((b+1)*block, len(img))])
		slots = append(slots, uint64(b))
	}
	return slots
}

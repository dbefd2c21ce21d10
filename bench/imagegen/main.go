// Command imagegen makes the benchmark's disk image and its changes.
//
//	imagegen gen -size 4G -out disk.raw
//	imagegen mutate -file disk.raw -uri nbd+unix:///bench?socket=S -frac 0.01
//	imagegen codec -file disk.raw -compression auto
//
// gen writes an OS-like sparse raw image in extents of 64 KiB–4 MiB:
// ~35% holes, 25% random (compressed/encrypted files), 25% text-like
// (compressible), 15% copies of earlier data shifted by a few bytes (the
// same files at other offsets). mutate overwrites frac of the 64 KiB blocks,
// chosen at random, with new random data, in the file and (if -uri is
// given) through NBD, and prints the bytes changed.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/blockwise/blockwise/internal/nbd"
)

const block = 64 << 10

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imagegen gen|mutate ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "mutate":
		err = mutate(os.Args[2:])
	case "codec":
		err = codecAlone(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagegen:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from
at which but have an they you were her she there been one all we their has would when if so no what
kernel module config usr lib share bin etc var log systemd service unit install error warning info
debug true false null return function const static void int char struct include define package import
0 1 2 3 4 5 6 7 8 9 10 100 255 1024 4096 65536 http https www com org net localhost 127.0.0.1`)

func fillText(rng *rand.Rand, p []byte) {
	var b bytes.Buffer
	for b.Len() < len(p) {
		b.WriteString(words[rng.IntN(len(words))])
		switch rng.IntN(12) {
		case 0:
			b.WriteByte('\n')
		case 1:
			b.WriteString(": ")
		default:
			b.WriteByte(' ')
		}
	}
	copy(p, b.Bytes())
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	sizeS := fs.String("size", "4G", "image size")
	out := fs.String("out", "disk.raw", "output file")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Parse(args)
	size, err := parseSize(*sizeS)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 7))
	buf := make([]byte, 4<<20)
	var written []int64 // offsets of data extents, for duplicates
	var holes, rnd, text, dup int64
	for off := int64(0); off < size; {
		n := min(size-off, int64(1+rng.IntN(64))*block)
		p := buf[:n]
		switch k := rng.IntN(100); {
		case k < 35:
			holes += n
			off += n
			continue
		case k < 60:
			fillRandom(rng, p)
			rnd += n
		case k < 85 || len(written) == 0:
			fillText(rng, p)
			text += n
		default: // an earlier extent, shifted by 1–4095 bytes
			src := written[rng.IntN(len(written))] + int64(1+rng.IntN(4095))
			if _, err := f.ReadAt(p, src); err != nil {
				fillText(rng, p) // near the end of the image
			}
			dup += n
		}
		if _, err := f.WriteAt(p, off); err != nil {
			return err
		}
		written = append(written, off)
		off += n
	}
	fmt.Printf("image %s: %d bytes: holes %d, random %d, text %d, duplicates %d\n", *out, size, holes, rnd, text, dup)
	return f.Sync()
}

func mutate(args []string) error {
	fs := flag.NewFlagSet("mutate", flag.ExitOnError)
	file := fs.String("file", "", "raw image to change")
	uri := fs.String("uri", "", "NBD export to apply the same change to")
	frac := fs.Float64("frac", 0.01, "fraction of 64 KiB blocks to overwrite")
	seed := fs.Uint64("seed", 2, "random seed")
	fs.Parse(args)
	f, err := os.OpenFile(*file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	nblocks := st.Size() / block
	rng := rand.New(rand.NewPCG(*seed, 9))
	want := int(float64(nblocks) * *frac)
	chosen := map[int64]bool{}
	for len(chosen) < want {
		chosen[rng.Int64N(nblocks)] = true
	}
	ctx := context.Background()
	var c *nbd.Client
	if *uri != "" {
		if c, err = nbd.Dial(ctx, *uri, nil); err != nil {
			return err
		}
		defer c.Close()
	}
	p := make([]byte, block)
	for b := range chosen {
		fillRandom(rng, p)
		if _, err := f.WriteAt(p, b*block); err != nil {
			return err
		}
		if c != nil {
			if err := c.WriteAt(ctx, p, b*block, false); err != nil {
				return err
			}
		}
	}
	if c != nil {
		if err := c.Flush(ctx); err != nil {
			return err
		}
	}
	fmt.Println(int64(len(chosen)) * block)
	return f.Sync()
}

package hashtree

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
)

// refRoot computes the root independently of the package: RFC 6962's
// recursive split (largest power of two below n) over leaves hashed
// straight from the image bytes with blake3 (docs/format.md H1–H3).
func refRoot(img []byte, blockSize int) Hash {
	var leaves [][32]byte
	for off := 0; off < len(img); off += blockSize {
		blk := make([]byte, blockSize) // zero-padded last block
		copy(blk, img[off:])
		leaves = append(leaves, blake3.Sum256(append([]byte{0}, blk...)))
	}
	var top [32]byte
	if len(leaves) > 0 {
		top = refMTH(leaves)
	}
	msg := append([]byte{2}, "blockwise-hashtree-v1"...)
	msg = binary.LittleEndian.AppendUint64(msg, uint64(len(img)))
	msg = binary.LittleEndian.AppendUint32(msg, uint32(blockSize))
	return blake3.Sum256(append(msg, top[:]...))
}

func refMTH(l [][32]byte) [32]byte {
	if len(l) == 1 {
		return l[0]
	}
	k := 1
	for k*2 < len(l) {
		k *= 2
	}
	a, b := refMTH(l[:k]), refMTH(l[k:])
	return blake3.Sum256(append(append([]byte{1}, a[:]...), b[:]...))
}

const bs = 512

func image(size int, fill func(b []byte)) []byte {
	img := make([]byte, size)
	if fill != nil {
		fill(img)
	}
	return img
}

func TestKnownImages(t *testing.T) {
	ones := func(b []byte) {
		for i := range b {
			b[i] = byte(i*7 + 1)
		}
	}
	cases := []struct {
		name string
		img  []byte
	}{
		{"empty", nil},
		{"one zero block", image(bs, nil)},
		{"one block", image(bs, ones)},
		{"partial block", image(100, ones)},
		{"all blocks", image(37*bs, ones)},
		{"holes between data", image(3000*bs, func(b []byte) {
			copy(b[5*bs:], "data")
			copy(b[1500*bs:], "more")
			b[len(b)-1] = 9
		})},
		{"two pages exactly", image(2*PageLeaves*bs, ones)},
		{"page and one", image((PageLeaves+1)*bs+3, ones)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := refRoot(c.img, bs)
			tr, err := Build(context.Background(), bytes.NewReader(c.img), int64(len(c.img)), bs, 3)
			if err != nil {
				t.Fatal(err)
			}
			if got := tr.Root(); got != want {
				t.Fatalf("Build root %x, reference %x", got, want)
			}
		})
	}
}

// TestIncrementalEqualsFull is the model test: random writes, zeroes,
// clones (snapshots), resizes; after each step the incremental tree's
// root equals the reference root of the image bytes.
func TestIncrementalEqualsFull(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		img := make([]byte, rng.IntN(3*PageLeaves)*bs+rng.IntN(bs))
		tr, _ := New(int64(len(img)), bs)
		var snaps []*Tree
		var snapImgs [][]byte
		for step := 0; step < 60; step++ {
			switch op := rng.IntN(10); {
			case op < 6 && len(img) > 0:
				writeBlock(t, rng, tr, img)
			case op == 6:
				snaps, snapImgs = append(snaps, tr.Clone()), append(snapImgs, bytes.Clone(img))
			case op == 7:
				img = resize(t, rng, tr, img)
			default:
				zeroBlock(t, rng, tr, img)
			}
			if got, want := tr.Root(), refRoot(img, bs); got != want {
				t.Fatalf("seed %d step %d: root %x, reference %x", seed, step, got, want)
			}
		}
		for i, s := range snaps { // writes after a clone never reach it
			if got, want := s.Root(), refRoot(snapImgs[i], bs); got != want {
				t.Fatalf("seed %d: snapshot %d changed", seed, i)
			}
		}
	}
}

func writeBlock(t *testing.T, rng *rand.Rand, tr *Tree, img []byte) {
	off := rng.IntN(len(img))
	n := min(1+rng.IntN(3*bs), len(img)-off)
	for i := range n {
		img[off+i] = byte(rng.Uint32())
	}
	rehash(t, tr, img, off, n)
}

func zeroBlock(t *testing.T, rng *rand.Rand, tr *Tree, img []byte) {
	if len(img) == 0 {
		return
	}
	b := rng.IntN((len(img) + bs - 1) / bs)
	clear(img[b*bs : min((b+1)*bs, len(img))])
	if err := tr.SetZero(int64(b)); err != nil {
		t.Fatal(err)
	}
}

// rehash sets the leaves of the blocks [off, off+n) touches, as the
// engine does for the blocks CBT marked.
func rehash(t *testing.T, tr *Tree, img []byte, off, n int) {
	for b := off / bs; b*bs < off+n; b++ {
		blk := img[b*bs : min((b+1)*bs, len(img))]
		if err := tr.Set(int64(b), LeafHash(blk, bs)); err != nil {
			t.Fatal(err)
		}
	}
}

func resize(t *testing.T, rng *rand.Rand, tr *Tree, img []byte) []byte {
	n := rng.IntN(3*PageLeaves*bs + 1)
	old := len(img)
	if n > old {
		img = append(img, make([]byte, n-old)...)
	} else {
		img = img[:n]
	}
	if err := tr.Resize(int64(n)); err != nil {
		t.Fatal(err)
	}
	if n < old && n%bs != 0 { // the cut last block now ends early
		rehash(t, tr, img, n-1, 1)
	}
	return img
}

func TestEncodeRoundTrip(t *testing.T) {
	img := image(2500*bs+7, func(b []byte) { copy(b[1200*bs:], "x"); b[len(b)-1] = 1 })
	tr, _ := Build(context.Background(), bytes.NewReader(img), int64(len(img)), bs, 2)
	b, _ := tr.MarshalBinary()
	if got := binary.LittleEndian.Uint32(b[24:]); got != 2 || len(b) != headerSize+2*(6+leafRecord)+trailerSize {
		t.Fatalf("stored pages %d in %d bytes, want 2 of one leaf each (zero pages and leaves are not stored)", got, len(b))
	}
	// A page written, then zeroed again, is not stored either.
	_ = tr.Set(2000, LeafHash([]byte("y"), bs))
	_ = tr.SetZero(2000)
	if again, _ := tr.MarshalBinary(); !bytes.Equal(again, b) {
		t.Fatal("a page of zero leaves changed the encoding")
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Root() != tr.Root() {
		t.Fatal("decoded root differs")
	}
	for _, i := range []int{0, 9, len(b) / 2, len(b) - 1} {
		bad := bytes.Clone(b)
		bad[i] ^= 1
		if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d: %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := Decode(b[:len(b)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestDiff(t *testing.T) {
	a, _ := New(5*PageLeaves*bs, bs)
	b := a.Clone()
	_ = b.Set(3, LeafHash([]byte{1}, bs))
	_ = b.Set(4000, LeafHash([]byte{2}, bs))
	d, err := Diff(a, b, 0)
	if err != nil || len(d) != 2 || d[0] != 3 || d[1] != 4000 {
		t.Fatalf("Diff = %v, %v", d, err)
	}
	if d, _ := Diff(a, b, 1); len(d) != 1 {
		t.Fatalf("limit 1: %v", d)
	}
	c, _ := New(bs, bs)
	if _, err := Diff(a, c, 0); !errors.Is(err, ErrRange) {
		t.Fatalf("sizes differ: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := New(10, 1000); !errors.Is(err, ErrBlockSize) {
		t.Fatalf("block size 1000: %v", err)
	}
	tr, _ := New(10*bs, bs)
	if err := tr.Set(10, Hash{}); !errors.Is(err, ErrRange) {
		t.Fatalf("Set past end: %v", err)
	}
	if _, err := tr.Leaf(-1); !errors.Is(err, ErrRange) {
		t.Fatalf("Leaf(-1): %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	tr, _ := New(3*PageLeaves*bs, bs)
	_ = tr.Set(5, LeafHash([]byte("x"), bs))
	b, _ := tr.MarshalBinary()
	f.Add(b)
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again, _ := tr.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatal("decoded tree does not encode back to its bytes")
		}
	})
}

// BenchmarkUpdate1TiB1pct: 1% of a 1 TiB disk's 64 KiB blocks changed at
// random, then the root (what a snapshot pays, beside hashing the data).
func BenchmarkUpdate1TiB1pct(b *testing.B) {
	tr, _ := New(1<<40, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := int64(0); i < tr.Leaves()/100; i++ { // populate first
		_ = tr.Set(rng.Int64N(tr.Leaves()), Hash{byte(i), 1})
	}
	tr.Root()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := int64(0); i < tr.Leaves()/100; i++ {
			_ = tr.Set(rng.Int64N(tr.Leaves()), Hash{byte(i), byte(n), 2})
		}
		tr.Root()
	}
}

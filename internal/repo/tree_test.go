package repo

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/blockwise/blockwise/internal/hashtree"
)

// TestTreeGroupEncoding: a group round-trips (T1), a zero group is not
// stored (T2), and a header or length that lies is refused.
func TestTreeGroupEncoding(t *testing.T) {
	tr, err := hashtree.New(300<<20+5, 64<<10) // 4801 leaves: groups of 4096 and 705
	if err != nil {
		t.Fatal(err)
	}
	group := func(g int) []hashtree.Hash { l, _ := FullTree{tr}.GroupLeaves(g); return l }
	if b := encodeTreeGroup(group(0), 64<<10); b != nil {
		t.Fatal("a group of zero leaves was encoded")
	}
	leaf := hashtree.LeafHash([]byte("x"), 64<<10)
	if err := tr.Set(4800, leaf); err != nil {
		t.Fatal(err)
	}
	b := encodeTreeGroup(group(1), 64<<10)
	raw, err := decodeTreeGroup(b, 705)
	if err != nil {
		t.Fatal(err)
	}
	zero := hashtree.ZeroLeaf(64 << 10)
	if !bytes.Equal(raw[704*32:], leaf[:]) || !bytes.Equal(raw[:32], zero[:]) {
		t.Fatal("group leaves differ from the tree's")
	}
	bad := map[string][]byte{
		"short":     b[:8],
		"magic":     append([]byte("BWTX"), b[4:]...),
		"version":   append(append([]byte{}, b[:4]...), append([]byte{2}, b[5:]...)...),
		"count":     binary.LittleEndian.AppendUint32(append([]byte{}, b[:5]...), 704),
		"truncated": b[:len(b)-1],
	}
	for name, c := range bad {
		if _, err := decodeTreeGroup(c, 705); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeTreeGroup(f *testing.F) {
	tr, _ := hashtree.New(1<<20, 64<<10)
	_ = tr.Set(3, hashtree.LeafHash([]byte("y"), 64<<10))
	l, _ := FullTree{tr}.GroupLeaves(0)
	f.Add(encodeTreeGroup(l, 64<<10), 16)
	f.Add([]byte("BWTG\x01\x00\x00\x00\x00"), 0)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		raw, err := decodeTreeGroup(b, want)
		if err == nil && len(raw) != 32*want {
			t.Fatalf("%d leaf bytes for %d leaves", len(raw), want)
		}
	})
}

// TestFoldTops: the root folded over group tops (T7) is the tree's, for
// sizes around group and power-of-two boundaries.
func TestFoldTops(t *testing.T) {
	const bs = 4096
	for _, leaves := range []int64{1, 4095, 4096, 4097, 8192, 8193, 12288, 12289, 16384, 20481, 40000} {
		tr, err := hashtree.New(leaves*bs-100, bs)
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < leaves; i += 777 {
			_ = tr.Set(i, hashtree.LeafHash([]byte{byte(i), byte(i >> 8)}, bs))
		}
		ft := FullTree{tr}
		tops := make([]hashtree.Hash, TreeGroups(tr.Size(), bs))
		for g := range tops {
			tops[g] = ft.GroupTop(g)
		}
		if FoldTops(tops) != tr.Top() {
			t.Errorf("%d leaves: folded tops differ from the tree's top", leaves)
		}
	}
}

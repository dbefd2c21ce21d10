package repo

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/blockwise/blockwise/internal/hashtree"
)

const testBS = 64 << 10

// leafOf is a data leaf distinct per i.
func leafOf(i int) hashtree.Hash {
	return hashtree.LeafHash([]byte{byte(i), byte(i >> 8), 1}, testBS)
}

// sparseGroup is a group of n leaves with data leaves at offs.
func sparseGroup(n int, offs ...int) *hashtree.SparseLeaves {
	s := hashtree.NewSparseLeaves(n, testBS)
	for _, i := range offs {
		s.Set(i, leafOf(i))
	}
	return s
}

// encodeV1 is a group as writers before version 2 stored it: every leaf.
func encodeV1(s *hashtree.SparseLeaves) []byte {
	b := groupHeader(treeGroupDense, s.Len(), denseGroupLen(s.Len()))
	for _, l := range s.Dense() {
		b = append(b, l[:]...)
	}
	return b
}

func sameLeaves(t *testing.T, got, want *hashtree.SparseLeaves) {
	t.Helper()
	if got.Len() != want.Len() || got.DataLen() != want.DataLen() || got.Top() != want.Top() {
		t.Fatalf("decoded group: %d leaves, %d data, differs from %d, %d", got.Len(), got.DataLen(), want.Len(), want.DataLen())
	}
	for i := range want.Len() {
		if got.At(i) != want.At(i) {
			t.Fatalf("leaf %d differs", i)
		}
	}
}

// TestTreeGroupEncoding: groups round-trip in both versions (T1, T10), a
// writer picks the shorter (a thin group: version 2, a full one:
// version 1), a version 1 blob of a thin group (older writers) reads the
// same, a zero group is not stored (T2).
func TestTreeGroupEncoding(t *testing.T) {
	if b := encodeTreeGroup(sparseGroup(705)); b != nil {
		t.Fatal("a group of zero leaves was encoded")
	}
	full := make([]int, 4096)
	for i := range full {
		full[i] = i
	}
	for _, tc := range []struct {
		name    string
		g       *hashtree.SparseLeaves
		version byte
	}{
		{"one leaf", sparseGroup(4096, 4095), treeGroupSparse},
		{"partial group", sparseGroup(705, 0, 3, 704), treeGroupSparse},
		{"full", sparseGroup(4096, full...), treeGroupDense},
		{"most", sparseGroup(4096, full[:3900]...), treeGroupDense},
		{"one leaf of one", sparseGroup(1, 0), treeGroupDense},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeTreeGroup(tc.g)
			if b[4] != tc.version || len(b) > min(denseGroupLen(tc.g.Len()), sparseGroupLen(tc.g.DataLen())) {
				t.Fatalf("version %d in %d bytes, want %d, the shorter", b[4], len(b), tc.version)
			}
			for _, enc := range [][]byte{b, encodeV1(tc.g)} {
				got, err := decodeTreeGroup(enc, tc.g.Len(), testBS)
				if err != nil {
					t.Fatal(err)
				}
				sameLeaves(t, got, tc.g)
			}
		})
	}
}

// TestTreeGroupRefused: a header, count, order or length that lies is
// refused in both versions, and so is a listed zero-block leaf (the
// encoding is canonical) — never a group with other leaves.
func TestTreeGroupRefused(t *testing.T) {
	v2 := encodeTreeGroup(sparseGroup(705, 3, 9, 700))
	v1 := encodeV1(sparseGroup(705, 3))
	zero := hashtree.ZeroLeaf(testBS)
	edit := func(b []byte, f func([]byte)) []byte { c := bytes.Clone(b); f(c); return c }
	bad := map[string][]byte{
		"short":         v2[:8],
		"magic":         edit(v2, func(c []byte) { c[0] = 'X' }),
		"version 3":     edit(v2, func(c []byte) { c[4] = 3 }),
		"v1 count":      binary.LittleEndian.AppendUint32(bytes.Clone(v1[:5]), 704),
		"v1 truncated":  v1[:len(v1)-1],
		"v2 count":      edit(v2, func(c []byte) { binary.LittleEndian.PutUint32(c[5:], 704) }),
		"v2 no k":       v2[:11],
		"v2 k zero":     edit(v2[:13], func(c []byte) { binary.LittleEndian.PutUint32(c[9:], 0) }),
		"v2 k too many": edit(v2, func(c []byte) { binary.LittleEndian.PutUint32(c[9:], 4) }),
		"v2 trailing":   append(bytes.Clone(v2), 0),
		"v2 truncated":  v2[:len(v2)-1],
		"v2 order":      edit(v2, func(c []byte) { binary.LittleEndian.PutUint16(c[13+34:], 2) }),
		"v2 duplicate":  edit(v2, func(c []byte) { binary.LittleEndian.PutUint16(c[13+34:], 3) }),
		"v2 past end":   edit(v2, func(c []byte) { binary.LittleEndian.PutUint16(c[13+68:], 705) }),
		"v2 zero leaf":  edit(v2, func(c []byte) { copy(c[13+34+2:], zero[:]) }),
	}
	for name, c := range bad {
		if _, err := decodeTreeGroup(c, 705, testBS); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeTreeGroup: whatever the bytes, a group decodes to want
// leaves without a listed zero-block leaf, or is refused; what decodes
// encodes and decodes again to the same leaves.
func FuzzDecodeTreeGroup(f *testing.F) {
	f.Add(encodeTreeGroup(sparseGroup(16, 3)), 16)
	f.Add(encodeV1(sparseGroup(16, 3, 15)), 16)
	f.Add(encodeTreeGroup(sparseGroup(4096, 0, 1, 4095)), 4096)
	f.Add([]byte("BWTG\x01\x00\x00\x00\x00"), 0)
	f.Add([]byte("BWTG\x02\x01\x00\x00\x00\x01\x00\x00\x00"), 1)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		g, err := decodeTreeGroup(b, want, testBS)
		if err != nil {
			return
		}
		if g.Len() != want || g.DataLen() > want {
			t.Fatalf("%d leaves, %d data, for %d", g.Len(), g.DataLen(), want)
		}
		g.Data(func(i int, h hashtree.Hash) {
			if h == hashtree.ZeroLeaf(testBS) {
				t.Fatalf("data leaf %d is the zero-block leaf", i)
			}
		})
		enc := encodeTreeGroup(g)
		if enc == nil {
			if g.DataLen() != 0 {
				t.Fatal("a group with data leaves encoded to nothing")
			}
			return
		}
		again, err := decodeTreeGroup(enc, want, testBS)
		if err != nil {
			t.Fatal(err)
		}
		sameLeaves(t, again, g)
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

package hashtree

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSparseDense: pages with few and many data leaves (around
// sparseMax), a partial last page, leaves zeroed again and a clone
// written on both sides: every root equals the independent reference
// over the same image, and the encoding round-trips.
func TestSparseDense(t *testing.T) {
	for _, tc := range []struct {
		leaves, set, zeroed int
	}{
		{PageLeaves, 1, 0}, {PageLeaves, sparseMax, 0}, {PageLeaves, sparseMax + 1, 0},
		{PageLeaves, sparseMax + 1, 10}, {PageLeaves, 300, 299}, {PageLeaves + 37, 50, 3},
		{2*PageLeaves + 5, 400, 100}, {3, 3, 1},
	} {
		t.Run(fmt.Sprintf("%d/%d/%d", tc.leaves, tc.set, tc.zeroed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.leaves), uint64(tc.set)))
			img := make([]byte, tc.leaves*bs)
			tr, _ := New(int64(len(img)), bs)
			var set []int64
			for range tc.set {
				i := rng.Int64N(int64(tc.leaves))
				img[i*bs] = byte(rng.IntN(255) + 1)
				_ = tr.Set(i, LeafHash(img[i*bs:(i+1)*bs], bs))
				set = append(set, i)
			}
			c := tr.Clone()
			cimg := bytes.Clone(img)
			for _, i := range set[:tc.zeroed] {
				clear(img[i*bs : (i+1)*bs])
				_ = tr.SetZero(i)
			}
			cimg[0] ^= 0x80
			_ = c.Set(0, LeafHash(cimg[:bs], bs))
			if tr.Root() != refRoot(img, bs) || c.Root() != refRoot(cimg, bs) {
				t.Fatal("root differs from the reference")
			}
			b, _ := tr.MarshalBinary()
			back, err := Decode(b)
			if err != nil || back.Root() != tr.Root() {
				t.Fatalf("decoded: %v", err)
			}
			if got := back.PageLeavesOf(0); got != nil && len(got) != tr.pageLen(0) {
				t.Fatalf("page leaves %d", len(got))
			}
		})
	}
}

// TestLeavesTop: the top of runs of leaves, few or many of them data
// leaves, of lengths that are and are not powers of two or whole pages,
// equals the top of a dense tree over the same leaves (every level built).
func TestLeavesTop(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 2, 3, 5, 64, 100, PageLeaves, PageLeaves + 1, 3*PageLeaves + 17, 4 * PageLeaves} {
		for _, data := range []int{0, 1, 9, n} {
			leaves := make([]Hash, n)
			for i := range leaves {
				leaves[i] = ZeroLeaf(bs)
			}
			for range data {
				l := &leaves[rng.IntN(n)]
				for k := range l {
					l[k] = byte(rng.Uint32())
				}
			}
			want := top(buildLevels(leaves))
			if got := LeavesTop(leaves, bs); got != want {
				t.Fatalf("%d leaves, %d set: top %x, want %x", n, data, got[:4], want[:4])
			}
		}
	}
	if LeavesTop(nil, bs) != (Hash{}) {
		t.Fatal("the top of no leaves is not the zero hash")
	}
}

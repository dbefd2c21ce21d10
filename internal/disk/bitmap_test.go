package disk

import (
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

func TestNextAbsent(t *testing.T) {
	bm := roaring.New()
	bm.AddRange(25600, 25616)
	bm.AddRange(131072, 131328)
	bm.AddRange(1<<31, 1<<31+100000)
	for _, opt := range []bool{false, true} {
		if opt {
			bm.RunOptimize()
		}
		for _, c := range []struct{ x, want uint32 }{{0, 0}, {25600, 25616}, {25615, 25616}, {131072, 131328}, {131100, 131328}, {1 << 31, 1<<31 + 100000}, {1<<31 + 5, 1<<31 + 100000}} {
			if got := nextAbsent(bm, c.x); got != int64(c.want) {
				t.Errorf("nextAbsent(%d) = %d, want %d", c.x, got, c.want)
			}
		}
	}
}

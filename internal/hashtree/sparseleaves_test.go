package hashtree

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSparseLeavesModel: random sets (data leaves, zero-block leaves
// again, repeated offsets) into runs of several lengths, odd ones too,
// across the sparse/dense switch; after each step the run agrees with a
// dense model leaf by leaf and its top is LeavesTop of the model.
func TestSparseLeavesModel(t *testing.T) {
	for _, tc := range []struct{ n, sets int }{
		{1, 4}, {3, 10}, {4096, 20}, {4096, 700}, {4095, 300}, {1000, 2000}, {37, 60},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.n, tc.sets), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.sets)))
			s := NewSparseLeaves(tc.n, bs)
			model := make([]Hash, tc.n)
			for i := range model {
				model[i] = ZeroLeaf(bs)
			}
			for step := range tc.sets {
				i := rng.IntN(tc.n)
				h := ZeroLeaf(bs)
				if rng.IntN(4) != 0 {
					h = LeafHash([]byte{byte(step), byte(step >> 8), 1}, bs)
				}
				s.Set(i, h)
				model[i] = h
				if step%50 == 0 || step == tc.sets-1 {
					checkSparseModel(t, s, model)
				}
			}
		})
	}
}

func checkSparseModel(t *testing.T, s *SparseLeaves, model []Hash) {
	t.Helper()
	data := 0
	for i, h := range model {
		if s.At(i) != h {
			t.Fatalf("leaf %d differs from the model", i)
		}
		if h != ZeroLeaf(bs) {
			data++
		}
	}
	if got := s.Top(); got != LeavesTop(model, bs) {
		t.Fatalf("top differs from LeavesTop of the model (%d data leaves)", data)
	}
	last, n := -1, 0
	s.Data(func(i int, h Hash) {
		if i <= last || h == ZeroLeaf(bs) || model[i] != h {
			t.Fatalf("Data gave leaf %d out of order, zero or wrong", i)
		}
		last, n = i, n+1
	})
	if n != data || s.DataLen() != data {
		t.Fatalf("%d data leaves listed, %d counted, want %d", n, s.DataLen(), data)
	}
	d := s.Dense()
	for i := range model {
		if d[i] != model[i] {
			t.Fatalf("Dense leaf %d differs", i)
		}
	}
}

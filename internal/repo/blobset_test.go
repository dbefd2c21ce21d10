package repo

import (
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestBlobSetIndexed: through growth from the smallest table, every blob
// added keeps its found mark (set by indexed, which refuses blobs never
// added), adding twice counts once, and unindexed counts exactly the
// blobs indexed was not called for.
func TestBlobSetIndexed(t *testing.T) {
	for _, hint := range []int{0, 50000} {
		rng := rand.New(rand.NewPCG(1, uint64(hint)))
		s := newBlobSet(hint)
		var ids []ID
		for range 30000 {
			var id ID
			repotest.Fill(rng, id[:])
			ids = append(ids, id)
			s.add(BlobChunk, id)
		}
		for i, id := range ids {
			if i%3 == 0 && !s.indexed(BlobChunk, id) {
				t.Fatalf("hint %d: chunk %d added, indexed says absent", hint, i)
			}
			s.add(BlobChunk, id) // again: no second entry, mark kept
		}
		if s.n != len(ids) {
			t.Fatalf("hint %d: %d entries for %d distinct blobs", hint, s.n, len(ids))
		}
		if s.indexed(BlobPage, ids[1]) {
			t.Fatalf("hint %d: a page never added was indexed", hint)
		}
		if got, want := s.unindexed(), len(ids)-(len(ids)+2)/3; got != want {
			t.Fatalf("hint %d: unindexed %d, want %d", hint, got, want)
		}
	}
}

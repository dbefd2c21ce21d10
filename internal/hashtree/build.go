package hashtree

import (
	"context"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Build hashes a whole image read from r (size bytes) with up to workers
// readers; blocks that read as zeroes stay zero leaves without storing a
// page. It is the reference the incremental tree is checked against, and
// what a restore verifies its image with.
func Build(ctx context.Context, r io.ReaderAt, size int64, blockSize, workers int) (*Tree, error) {
	t, err := New(size, blockSize)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex // Set is not concurrent
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	const span = 256 // blocks per task
	for first := int64(0); first < t.leaves; first += span {
		g.Go(func() error {
			leaves, err := hashSpan(ctx, r, t, first, min(first+span, t.leaves))
			mu.Lock()
			defer mu.Unlock()
			for i, l := range leaves {
				if l != (Hash{}) {
					_ = t.Set(first+int64(i), l)
				}
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return t, nil
}

// hashSpan returns the leaves of blocks from..to, the zero hash standing
// for a zero block (no block hashes to it).
func hashSpan(ctx context.Context, r io.ReaderAt, t *Tree, from, to int64) ([]Hash, error) {
	leaves := make([]Hash, to-from)
	buf := make([]byte, t.blockSize)
	for i := from; i < to; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		off := i * int64(t.blockSize)
		n := int(min(int64(t.blockSize), t.size-off))
		if got, err := r.ReadAt(buf[:n], off); err != nil && (err != io.EOF || got < n) {
			return nil, err
		}
		if !IsZero(buf[:n]) {
			leaves[i-from] = LeafHash(buf[:n], t.blockSize)
		}
	}
	return leaves, nil
}

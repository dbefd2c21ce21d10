package backup

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// verifyRoot hashes the restored image on the target and checks it has
// the point's root (docs/repository.md, T5): what the read-back's
// per-chunk sums cannot see (a zero slot skipped on a target wrongly
// taken for zero, a write landing at the wrong offset) shows here. A
// point without a root, or a partial restore, is not checked.
func verifyRoot(ctx context.Context, o RestoreOptions, m *repo.Manifest, res *RestoreResult) error {
	if m.Tree == nil || o.Partial {
		return nil
	}
	want, err := m.Tree.RootHash()
	if err != nil {
		return err
	}
	got, err := hashtree.Build(ctx, targetReader{ctx, o.Target}, int64(m.Size), int(m.Tree.BlockSize), o.Workers)
	if err != nil {
		return fmt.Errorf("hash the restored image: %w", err)
	}
	root := got.Root()
	if root == want {
		res.RootVerified = true
		return nil
	}
	named := "its size or block size"
	if o.Repo == nil { // a root without its repository (VerifyImage's r nil): no leaves to name
		named = "some blocks"
	} else if pt, err := o.Repo.LoadTree(ctx, m); err == nil {
		if diff, err := hashtree.Diff(pt, got, maxNamed+1); err == nil {
			named = leavesString(diff, int64(m.Tree.BlockSize))
		}
	}
	return fmt.Errorf("%w: the restored image's root %x is not the point's %x: %s differ", ErrRootMismatch, root[:8], want[:8], named)
}

// targetReader reads a Target as an io.ReaderAt.
type targetReader struct {
	ctx context.Context
	t   Target
}

// ReadAt implements io.ReaderAt.
func (r targetReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.t.ReadAt(r.ctx, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// VerifyImage hashes a whole image on t (a drive the point was restored
// into, possibly in part) and checks it has the point's root; verified
// is false for a point without a root (nothing to compare with). r may
// be nil (m's tree root is all there is): a mismatch then names no
// leaves.
func VerifyImage(ctx context.Context, r *repo.Repository, m *repo.Manifest, t Target, workers int) (verified bool, err error) {
	if workers <= 0 {
		workers = 4
	}
	res := &RestoreResult{}
	err = verifyRoot(ctx, RestoreOptions{Repo: r, Target: t, Workers: workers}, m, res)
	return res.RootVerified, err
}

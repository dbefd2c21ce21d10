package s3_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

const password = "s3 test password"

// repoOptions keep Argon2id cheap and packs small so a few MiB of image
// make several packs.
var repoOptions = repo.Options{PackSize: 1 << 20, PageSlots: 256, KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}}

// stack is how a real repository would use S3: bounded connections,
// retried transient errors.
func stack(be backend.Backend) backend.Backend {
	return newRetry(backend.NewLimit(be, 8), 5)
}

const chunk = 64 << 10 // the repository's chunk size

// randomImage: random 64 KiB chunks, about zeroFrac of them all zero.
func randomImage(seed uint64, size int, zeroFrac float64) []byte {
	return repotest.Image(repotest.Rand(seed), size, chunk, zeroFrac)
}

// backup writes slots of img (all when nil) with four writers, commits.
func backup(ctx context.Context, r *repo.Repository, parent *repo.Manifest, disk string, img []byte, slots []uint64) (*repo.Manifest, error) {
	return repotest.Backup(ctx, r.NewWriter, parent, repo.Meta{Disk: disk, DiskUUID: disk, Size: uint64(len(img))}, img, chunk, slots)
}

// checkClean checks the data too; warnings fail the test unless allowed.
func checkClean(t *testing.T, r *repo.Repository, allowWarnings bool) *repo.CheckResult {
	t.Helper()
	res := repotest.CheckClean(t, r.Check, repo.CheckOptions{ReadData: true})
	if !allowWarnings && len(res.Warnings) > 0 {
		t.Fatalf("check: warnings %v", res.Warnings)
	}
	return res
}

// Full backup, 1% incremental, both restored byte-identical through a
// freshly opened repository, and Check(readData) clean.
func TestRepoFullAndIncremental(t *testing.T) {
	be := open(t)
	ctx := t.Context()
	r, err := repo.Init(ctx, stack(be), password, repoOptions)
	if err != nil {
		t.Fatal(err)
	}
	img := randomImage(1, 8<<20, 0.25)
	full, err := backup(ctx, r, nil, "disk0", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Clone(img)
	slots := repotest.Slots(repotest.Mutate(repotest.Rand(2), img, chunk, 0.01))
	incr, err := backup(ctx, r, full, "disk0", img, slots)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := repo.Open(ctx, stack(be), password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repotest.Verify(t, r2.OpenImage, full.ID, first)
	repotest.Verify(t, r2.OpenImage, incr.ID, img)
	checkClean(t, r2, false)
	if incr.Stats.NewBytes > 4*uint64(len(slots))<<16 {
		t.Errorf("incremental stored %d bytes for %d changed chunks", incr.Stats.NewBytes, len(slots))
	}
}

// Two hosts (two repository handles on their own connections) back up
// into one S3 repository at once: both commit, both restore.
func TestRepoConcurrentBackups(t *testing.T) {
	prefix := s3test.RandomPrefix("concurrent")
	be := openPrefix(t, prefix)
	ctx := t.Context()
	if _, err := repo.Init(ctx, stack(be), password, repoOptions); err != nil {
		t.Fatal(err)
	}
	// Garbage for prune to find while the backups run.
	r0, err := repo.Open(ctx, stack(be), password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := backup(ctx, r0, nil, "old", randomImage(5, 2<<20, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r0.Forget(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	imgs := [][]byte{randomImage(3, 4<<20, 0.1), randomImage(4, 4<<20, 0.1)}
	ms := make([]*repo.Manifest, 2)
	var g errgroup.Group
	done := make(chan struct{})
	for i := range 2 {
		g.Go(func() error {
			r, err := repo.Open(ctx, stack(openPrefix(t, prefix)), password, repo.Options{})
			if err != nil {
				return err
			}
			r.SetLockWait(time.Minute) // a prune running now: wait for it
			ms[i], err = backup(ctx, r, nil, "disk"+string(rune('a'+i)), imgs[i], nil)
			return err
		})
	}
	// Prune beside them: it must either find them locked (ErrLocked) or
	// run, and then the backups wait for it; either way it never removes
	// anything a running backup will reference.
	var prunes, locked int
	pruneErr := make(chan error, 1)
	go func() {
		r, err := repo.Open(ctx, stack(openPrefix(t, prefix)), password, repo.Options{})
		for err == nil {
			select {
			case <-done:
				pruneErr <- nil
				return
			default:
			}
			if _, err = r.Prune(ctx); errors.Is(err, repo.ErrLocked) {
				locked, err = locked+1, nil
			} else if err == nil {
				prunes++
			}
			time.Sleep(20 * time.Millisecond)
		}
		pruneErr <- err
	}()
	err = g.Wait()
	close(done)
	if perr := <-pruneErr; perr != nil {
		t.Fatalf("prune beside backups: %v", perr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prune ran %d times beside the backups, %d times found them locked", prunes, locked)
	if _, err := r0.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, stack(be), password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		repotest.Verify(t, r.OpenImage, m.ID, imgs[i])
	}
	checkClean(t, r, true)
}

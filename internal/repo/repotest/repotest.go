// Package repotest is the shared test support for repositories: random
// disk images, their mutation, a backup of chosen chunks with concurrent
// writers, a read-back that compares byte for byte, and a check that must
// come out clean. It does not import package repo, so repo's own
// internal tests use it as well as the backends', backup's and the CLI's;
// the repository's types fit its small interfaces and type parameters
// (r.NewWriter, r.OpenImage, r.Check are passed as functions). Test
// support only: production code never imports it.
package repotest

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"golang.org/x/sync/errgroup"
)

// Rand is a deterministic generator for seed.
func Rand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, ^seed)) }

// Fill fills b with random bytes from rng.
func Fill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

// Image makes an image of size bytes: random chunk-sized pieces, about
// zeroFrac of them all zero (thin-provisioned regions).
func Image(rng *rand.Rand, size, chunk int, zeroFrac float64) []byte {
	img := make([]byte, size)
	for off := 0; off < size; off += chunk {
		if rng.Float64() < zeroFrac {
			continue
		}
		Fill(rng, img[off:min(off+chunk, size)])
	}
	return img
}

// Mutate rewrites fraction (at least one) of the blk-sized blocks of img
// at scattered, distinct positions and returns the block numbers.
func Mutate(rng *rand.Rand, img []byte, blk int, fraction float64) []int {
	nblk := (len(img) + blk - 1) / blk
	perm := rng.Perm(nblk)[:max(1, int(float64(nblk)*fraction))]
	for _, b := range perm {
		Fill(rng, img[b*blk:min((b+1)*blk, len(img))])
	}
	return perm
}

// Slots converts block numbers to the slots a writer takes.
func Slots(blocks []int) []uint64 {
	s := make([]uint64, len(blocks))
	for i, b := range blocks {
		s[i] = uint64(b)
	}
	return s
}

// Writer is a repository's snapshot writer (*repo.SnapshotWriter)
// committing to an M (*repo.Manifest).
type Writer[M any] interface {
	PutChunk(ctx context.Context, slot uint64, data []byte) error
	Commit(ctx context.Context) (M, error)
	Abort(ctx context.Context) error
}

// Backup opens a writer with newWriter (r.NewWriter), writes the given
// chunk-sized slots of img (all when slots is nil) with four concurrent
// writers and commits; on an error it aborts the writer.
func Backup[P, Meta any, W Writer[M], M any](ctx context.Context, newWriter func(context.Context, P, Meta) (W, error),
	parent P, meta Meta, img []byte, chunk int, slots []uint64) (M, error) {
	var zero M
	w, err := newWriter(ctx, parent, meta)
	if err != nil {
		return zero, err
	}
	cs := uint64(chunk)
	if slots == nil {
		for s := range (uint64(len(img)) + cs - 1) / cs {
			slots = append(slots, s)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, s := range slots {
		g.Go(func() error { return w.PutChunk(gctx, s, img[s*cs:min((s+1)*cs, uint64(len(img)))]) })
	}
	if err := g.Wait(); err != nil {
		w.Abort(context.WithoutCancel(ctx))
		return zero, err
	}
	return w.Commit(ctx)
}

// ImageReader is a restore point being read (*repo.Image).
type ImageReader interface {
	io.ReaderAt
	Size() int64
}

// ID names a restore point (repo.ID).
type ID interface{ Short() string }

// Verify opens id with open (r.OpenImage) and fails the test unless it
// reads back as want, size and bytes.
func Verify[I ID, R ImageReader](t testing.TB, open func(context.Context, I) (R, error), id I, want []byte) {
	t.Helper()
	im, err := open(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if im.Size() != int64(len(want)) {
		t.Fatalf("image %s: size %d, want %d", id.Short(), im.Size(), len(want))
	}
	got, err := io.ReadAll(io.NewSectionReader(im, 0, im.Size()))
	if err != nil {
		t.Fatalf("image %s: %v", id.Short(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("image %s differs from what was written", id.Short())
	}
}

// Result is a repository check's result (*repo.CheckResult).
type Result interface{ Err() error }

// CheckClean runs check (r.Check) with opts and fails the test if it
// fails or finds errors; it returns the result for the warnings.
func CheckClean[O any, R Result](t testing.TB, check func(context.Context, O) (R, error), opts O) R {
	t.Helper()
	res, err := check(context.Background(), opts)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("check: %v", err)
	}
	return res
}

// CheckAtEnd runs check when t ends (unless t failed already, or skip
// says not to) and reports what it returns: whatever a test did to a
// repository, failed commands and kills included, must leave it clean.
func CheckAtEnd(t testing.TB, skip func() bool, check func(context.Context) error) {
	t.Cleanup(func() {
		if t.Failed() || (skip != nil && skip()) {
			return
		}
		if err := check(context.Background()); err != nil {
			t.Errorf("after the test: %v", err)
		}
	})
}

package backup

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/repo"
)

// Target receives a restored image. Safe for concurrent use.
type Target interface {
	WriteAt(ctx context.Context, p []byte, off int64) error
	ReadAt(ctx context.Context, p []byte, off int64) error
	// Zero makes a range read as zeroes (skipped when the target is known
	// to be zero already).
	Zero(ctx context.Context, off, n int64) error
	Flush(ctx context.Context) error
	Size() int64
}

// RestoreOptions of a restore.
type RestoreOptions struct {
	Repo     *repo.Repository
	Manifest repo.ID
	Target   Target
	// TargetIsZero: the target reads as zeroes already (a new disk or
	// file), so zero slots are skipped rather than written.
	TargetIsZero bool
	Workers      int
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Manifest     *repo.Manifest
	BytesWritten int64
	ZeroSlots    int64
	Verified     int64 // chunks read back from the target and compared
	Duration     time.Duration
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Restore writes a restore point to a target, then reads the target back
// and compares every chunk: each chunk is verified against its keyed hash
// when it leaves the repository, and against what was written when it
// lands. A target smaller than the image is refused.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = 4
	}
	im, err := o.Repo.OpenImage(ctx, o.Manifest)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Manifest: im.Manifest()}
	if o.Target.Size() < im.Size() {
		return nil, fmt.Errorf("restore: target has %d bytes, the image %d", o.Target.Size(), im.Size())
	}
	sums, err := writeSlots(ctx, o, im, res)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := o.Target.Flush(ctx); err != nil {
		return nil, fmt.Errorf("restore: flush: %w", err)
	}
	if err := verifySlots(ctx, o, im, sums, res); err != nil {
		return nil, fmt.Errorf("restore: verify: %w", err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// writeSlots copies every slot; it returns the CRC-32C of each chunk
// written (0 for zero slots) for the read-back check.
func writeSlots(ctx context.Context, o RestoreOptions, im *repo.Image, res *RestoreResult) ([]uint32, error) {
	cs := int64(im.ChunkSize())
	sums := make([]uint32, (im.Size()+cs-1)/cs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	err := im.Slots(ctx, func(slot uint64, zero bool) error {
		off := int64(slot) * cs
		n := min(cs, im.Size()-off)
		if zero {
			atomic.AddInt64(&res.ZeroSlots, 1)
			if o.TargetIsZero {
				return nil
			}
			g.Go(func() error { return o.Target.Zero(gctx, off, n) })
			return gctx.Err()
		}
		g.Go(func() error {
			c, err := im.ReadChunk(gctx, slot)
			if err != nil {
				return fmt.Errorf("chunk at offset %d of restore point %s: %w", off, im.Manifest().ID.Short(), err)
			}
			sums[slot] = crc32.Checksum(c, castagnoli)
			atomic.AddInt64(&res.BytesWritten, int64(len(c)))
			return o.Target.WriteAt(gctx, c, off)
		})
		return gctx.Err()
	})
	if werr := g.Wait(); err == nil {
		err = werr
	}
	return sums, err
}

func verifySlots(ctx context.Context, o RestoreOptions, im *repo.Image, sums []uint32, res *RestoreResult) error {
	cs := int64(im.ChunkSize())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	zero := make([]byte, cs)
	err := im.Slots(ctx, func(slot uint64, isZero bool) error {
		if isZero && o.TargetIsZero {
			return nil // never written: the target was zero to begin with
		}
		g.Go(func() error {
			off := int64(slot) * cs
			buf := make([]byte, min(cs, im.Size()-off))
			if err := o.Target.ReadAt(gctx, buf, off); err != nil {
				return err
			}
			ok := (isZero && bytes.Equal(buf, zero[:len(buf)])) || (!isZero && crc32.Checksum(buf, castagnoli) == sums[slot])
			if !ok {
				return fmt.Errorf("chunk at %d differs from the restore point after writing", off)
			}
			atomic.AddInt64(&res.Verified, 1)
			return nil
		})
		return gctx.Err()
	})
	if werr := g.Wait(); err == nil {
		err = werr
	}
	return err
}

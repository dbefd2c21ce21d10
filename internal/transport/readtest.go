package transport

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backup"
)

// readTestChunk is the size of one read of ReadTest.
const readTestChunk = 4 << 20

// ReadTestResult is what ReadTest measured.
type ReadTestResult struct {
	Transport string  `json:"transport"` // the Report of the mode used
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	MBps      float64 `json:"mbPerSecond"`
}

// ReadTest measures a transport: it snapshots diskName on the host, reads
// every allocated byte of the snapshot through the first usable mode of
// order in reads of 4 MiB, workers (at least 1) at a time, discards the data and
// deletes the snapshot again (even when the reads fail).
func ReadTest(ctx context.Context, order string, env Env, diskName string, workers int) (res ReadTestResult, err error) {
	if workers < 1 { // errgroup's limit 0 would block forever, <0 is no bound
		return res, fmt.Errorf("read-test with %d workers: want at least 1", workers)
	}
	h := backup.ClientHost{C: env.Client}
	snap, err := h.CreateSnapshot(ctx, diskName, "blockwise read-test")
	if err != nil {
		return res, err
	}
	defer func() {
		if derr := backup.DeleteSnapshot(context.WithoutCancel(ctx), h, diskName, snap.ID); err == nil {
			err = derr
		}
	}()
	areas, err := env.Client.AllChangedAreas(ctx, diskName, snap.ID, "*")
	if err != nil {
		return res, err
	}
	src, rep, err := Open(ctx, order, env, diskName, snap.ID)
	if err != nil {
		return res, err
	}
	defer src.Close()
	start := time.Now()
	var n atomic.Int64
	grp, gctx := errgroup.WithContext(ctx)
	grp.SetLimit(workers)
	for _, a := range areas {
		for off := a.Start; off < a.Start+a.Length; off += readTestChunk {
			size := min(readTestChunk, a.Start+a.Length-off)
			grp.Go(func() error {
				buf := make([]byte, size)
				n.Add(size)
				return src.ReadAt(gctx, buf, off)
			})
		}
	}
	if err := grp.Wait(); err != nil {
		return res, err
	}
	el := time.Since(start).Seconds()
	return ReadTestResult{Transport: rep.String(), Bytes: n.Load(), Seconds: el, MBps: float64(n.Load()) / el / 1e6}, nil
}

// Command repogen builds a large repository synthetically, for
// bench/repo-scale.sh (issue 23, item 7):
//
//	repogen -repo DIR -password PW -chunks 10000000 -disks 4
//
// The repository has 4 KiB chunks (the smallest), so 10 million chunks
// are 40 GB of logical data: each chunk is unique (a counter, then
// zeros), so it compresses to a few dozen bytes and the repository stays
// about 1 GB while its index holds every chunk. The chunks are spread
// over -disks sparse disks, one restore point each, every disk twice as
// large as what it holds (a used slot, then an empty one). With -grow on
// an existing repository it adds the chunks as new points.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
)

func main() {
	dir := flag.String("repo", "", "repository directory (created unless -grow)")
	pw := flag.String("password", "bench", "password")
	chunks := flag.Int64("chunks", 1_000_000, "unique chunks to add")
	disks := flag.Int("disks", 4, "disks (restore points) to spread them over")
	grow := flag.Bool("grow", false, "add to an existing repository")
	flag.Parse()
	if err := run(*dir, *pw, *chunks, *disks, *grow); err != nil {
		fmt.Fprintln(os.Stderr, "repogen:", err)
		os.Exit(1)
	}
}

func run(dir, pw string, chunks int64, disks int, grow bool) error {
	ctx := context.Background()
	be, err := local.Open(dir)
	if err != nil {
		return err
	}
	var r *repo.Repository
	if grow {
		r, err = repo.Open(ctx, be, pw, repo.Options{})
	} else {
		r, err = repo.Init(ctx, be, pw, repo.Options{ChunkSize: 4 << 10})
	}
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	base := time.Now().UnixNano() // chunks unique across -grow runs too
	per := chunks / int64(disks)
	for d := range disks {
		if err := point(ctx, r, fmt.Sprintf("scale%d-%d", d, base), base+int64(d)*per, per); err != nil {
			return err
		}
	}
	fmt.Printf("added %d chunks in %d points in %.1f s\n", per*int64(disks), disks, time.Since(start).Seconds())
	return nil
}

// point writes n unique chunks as one restore point of a disk of 2n
// slots (every other slot used), calling Done as it goes so the writer
// keeps only the pages in progress.
func point(ctx context.Context, r *repo.Repository, disk string, first, n int64) error {
	cs := int64(r.Config().ChunkSize)
	w, err := r.NewWriter(ctx, nil, repo.Meta{Disk: disk, DiskUUID: disk, Size: uint64(2 * n * cs), Time: time.Now()})
	if err != nil {
		return err
	}
	const batch = 1 << 16
	for lo := int64(0); lo < n; lo += batch {
		hi := min(lo+batch, n)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(runtime.GOMAXPROCS(0))
		for part := lo; part < hi; part += 4096 {
			g.Go(func() error {
				buf := make([]byte, cs)
				for i := part; i < min(part+4096, hi); i++ {
					binary.LittleEndian.PutUint64(buf, uint64(first+i))
					if err := w.PutChunk(gctx, uint64(2*i), buf); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			w.Abort(context.WithoutCancel(ctx))
			return err
		}
		if err := w.Done(ctx, uint64(2*hi)); err != nil {
			w.Abort(context.WithoutCancel(ctx))
			return err
		}
	}
	_, err = w.Commit(ctx)
	return err
}

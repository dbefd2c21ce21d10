package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backend/s3"
	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	bwbackup "github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
)

var (
	sizeMiB = flag.Int("size", 1024, "image size in MiB")
	dir     = flag.String("dir", "", "scratch directory (default: a new temporary one)")
	conns   = flag.Int("conns", 16, "backend operations in flight (backend.Limit)")
	workers = flag.Int("workers", 8, "goroutines calling PutChunk / ReadChunk")
)

type result struct {
	name                string
	full, incr, restore time.Duration
	objects             int
	stored              int64
	put, get, head, lst int64 // requests made by the incremental
	open                time.Duration
	openGets            int64 // GETs that reached the store while opening the repository again
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "s3bench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	scratch, err := scratchDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	img := realisticImage(*sizeMiB<<20, 1)
	next := bytes.Clone(img)
	slots := mutate(next, 0.01, 2)
	srv, err := s3test.Start(filepath.Join(scratch, "s3"))
	if err != nil {
		return err
	}
	defer srv.Stop()
	if err := srv.MakeBucket(ctx, "bench"); err != nil {
		return err
	}
	var results []result
	for _, name := range []string{"local", "s3", "s3+cache"} {
		be, err := openTarget(ctx, name, scratch, srv)
		if err != nil {
			return err
		}
		wrap := func(be backend.Backend) backend.Backend { return be }
		if name == "s3+cache" { // as the CLI opens an S3 repository
			wrap = func(be backend.Backend) backend.Backend {
				return backend.NewCache(be, filepath.Join(scratch, "cache"), repo.ContentNamed, backend.Index, backend.Manifests)
			}
		}
		res, err := bench(ctx, name, be, wrap, img, next, slots)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, res)
	}
	report(results, len(slots))
	return nil
}

func scratchDir() (string, error) {
	if *dir == "" {
		return os.MkdirTemp("", "s3bench-")
	}
	return os.MkdirTemp(*dir, "s3bench-")
}

func openTarget(ctx context.Context, name, scratch string, srv *s3test.Server) (backend.Backend, error) {
	if name == "local" {
		return local.Open(filepath.Join(scratch, "local"))
	}
	return s3.Open(ctx, srv.Config("bench", strings.ReplaceAll(name, "+", "-")))
}

func bench(ctx context.Context, name string, be backend.Backend, wrap func(backend.Backend) backend.Backend, img, next []byte, slots []uint64) (result, error) {
	res := result{name: name}
	c := &counting{Backend: be}
	stack := wrap(backend.NewRetry(backend.NewLimit(c, *conns), 5))
	r, err := repo.Init(ctx, stack, "bench",
		repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	full, err := backup(ctx, r, nil, img, nil)
	if err != nil {
		return res, err
	}
	res.full = time.Since(t0)
	c.reset()
	t0 = time.Now()
	incr, err := backup(ctx, r, full, next, slots)
	if err != nil {
		return res, err
	}
	res.incr = time.Since(t0)
	res.put, res.get, res.head, res.lst = c.put.Load(), c.get.Load(), c.head.Load(), c.list.Load()
	t0 = time.Now()
	if err := restore(ctx, r, incr.ID, next); err != nil {
		return res, err
	}
	res.restore = time.Since(t0)
	// What every later command pays first: opening the repository loads
	// every index file.
	c.reset()
	t0 = time.Now()
	r2, err := repo.Open(ctx, stack, "bench", repo.Options{})
	if err != nil {
		return res, err
	}
	r2.Close()
	res.open, res.openGets = time.Since(t0), c.get.Load()
	res.objects, res.stored, err = countObjects(ctx, be)
	return res, err
}

func backup(ctx context.Context, r *repo.Repository, parent *repo.Manifest, img []byte, slots []uint64) (*repo.Manifest, error) {
	w, err := r.NewWriter(ctx, parent, repo.Meta{Disk: "bench", Size: uint64(len(img)), Time: time.Now()})
	if err != nil {
		return nil, err
	}
	if slots == nil {
		for s := range uint64(len(img)+block-1) / block {
			slots = append(slots, s)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(*workers)
	for _, s := range slots {
		g.Go(func() error { return w.PutChunk(gctx, s, img[s*block:min((s+1)*block, uint64(len(img)))]) })
	}
	if err := g.Wait(); err != nil {
		w.Abort(ctx)
		return nil, err
	}
	return w.Commit(ctx)
}

// restore runs the real restore path (backup.Restore: runs of slots,
// ranged loads of neighbouring blobs, read-back verification) into memory
// and checks the result against want.
func restore(ctx context.Context, r *repo.Repository, id repo.ID, want []byte) error {
	t := &memTarget{b: make([]byte, len(want))}
	_, err := bwbackup.Restore(ctx, bwbackup.RestoreOptions{Repo: r, Manifest: id, Target: t, TargetIsZero: true, Workers: *workers})
	if err != nil {
		return err
	}
	if !bytes.Equal(t.b, want) {
		return fmt.Errorf("restored image differs")
	}
	return nil
}

// memTarget is a restore target in memory: the benchmark measures the
// repository and its backend, not a disk.
type memTarget struct{ b []byte }

var _ bwbackup.Target = (*memTarget)(nil)

// WriteAt implements backup.Target.
func (t *memTarget) WriteAt(_ context.Context, p []byte, off int64) error {
	copy(t.b[off:], p)
	return nil
}

// ReadAt reads back what was written.
func (t *memTarget) ReadAt(_ context.Context, p []byte, off int64) error {
	copy(p, t.b[off:])
	return nil
}

// Zero implements backup.Target: the range reads as zeros.
func (t *memTarget) Zero(_ context.Context, off, n int64) error {
	clear(t.b[off : off+n])
	return nil
}

// Flush implements backup.Target; memory needs no flush.
func (t *memTarget) Flush(context.Context) error { return nil }

// Size is the image size.
func (t *memTarget) Size() int64 { return int64(len(t.b)) }

func countObjects(ctx context.Context, be backend.Backend) (int, int64, error) {
	n, size := 0, int64(0)
	for _, t := range backend.Types {
		err := be.List(ctx, t, func(fi backend.FileInfo) error { n, size = n+1, size+fi.Size; return nil })
		if err != nil {
			return 0, 0, err
		}
	}
	return n, size, nil
}

func report(rs []result, changed int) {
	gib := float64(*sizeMiB) / 1024
	fmt.Printf("image %d MiB (35%% holes, 25%% random, 25%% text, 15%% shifted copies), incremental: %d changed 64 KiB blocks\n", *sizeMiB, changed)
	fmt.Printf("%-8s %9s %9s %9s %9s %9s %11s %s\n", "target", "full", "incr", "restore", "open", "objects", "objects/GiB", "incremental requests; open")
	for _, r := range rs {
		fmt.Printf("%-8s %8.2fs %8.2fs %8.2fs %8.3fs %9d %11.1f PUT %d GET %d HEAD %d LIST %d (stored %.1f MiB); open GET %d\n",
			r.name, r.full.Seconds(), r.incr.Seconds(), r.restore.Seconds(), r.open.Seconds(), r.objects, float64(r.objects)/gib,
			r.put, r.get, r.head, r.lst, float64(r.stored)/(1<<20), r.openGets)
	}
	a, b, c := rs[0], rs[1], rs[2]
	fmt.Printf("s3/local ratio: full %.2f, incremental %.2f, restore %.2f, open %.2f\n",
		b.full.Seconds()/a.full.Seconds(), b.incr.Seconds()/a.incr.Seconds(), b.restore.Seconds()/a.restore.Seconds(), b.open.Seconds()/a.open.Seconds())
	fmt.Printf("cache: opening the S3 repository again made %d GETs and took %.3fs without it, %d GETs and %.3fs with it\n",
		b.openGets, b.open.Seconds(), c.openGets, c.open.Seconds())
}

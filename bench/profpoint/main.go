// Command profpoint is `blockwise serve-point` with a CPU profile, for
// bench/recovery.sh PROFILE=1: it serves the newest restore point of a
// local repository read-only (or writable with -overlay) on a unix
// socket and writes the profile on SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/blockwise/blockwise/bench/internal/profnbd"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/repo"
)

func main() {
	repoDir := flag.String("repo", "", "local repository")
	sock := flag.String("socket", "", "unix socket")
	ovDir := flag.String("overlay", "", "serve writable with this overlay directory")
	cacheMB := flag.Int("cache-mb", 64, "chunk cache")
	prof := flag.String("cpuprofile", "cpu.pprof", "CPU profile output")
	flag.Parse()
	if err := run(*repoDir, *sock, *ovDir, *cacheMB, *prof); err != nil {
		fmt.Fprintln(os.Stderr, "profpoint:", err)
		os.Exit(1)
	}
}

func run(repoDir, sock, ovDir string, cacheMB int, prof string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	be, err := local.Open(repoDir)
	if err != nil {
		return err
	}
	r, err := repo.Open(ctx, be, os.Getenv("BLOCKWISE_PASSWORD"), repo.Options{})
	if err != nil {
		return err
	}
	m, err := backup.FindPoint(ctx, r, "latest", "")
	if err != nil {
		return err
	}
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		return err
	}
	im.SetCacheChunks(cacheMB << 20 / im.ChunkSize())
	exp := backup.NewPointExport(im)
	exp.SetReadAhead(ctx, 16)
	var x nbd.Exporter = backup.PointExporter{Export: exp}
	if ovDir != "" {
		ov, err := overlay.Open(ovDir, m.ID.String(), im.Size())
		if err != nil {
			return err
		}
		defer ov.Close()
		w, err := backup.NewWritableExport(exp, ov)
		if err != nil {
			return err
		}
		x = backup.WritableExporter{Export: w}
	}
	srv := nbd.NewServer(x, nbd.ServerOptions{})
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	return profnbd.Serve(srv, prof, l)
}

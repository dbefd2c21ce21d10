// Command profserve is `blockwise serve` with a CPU profile, for
// bench/nbd.sh PROFILE=1: it serves the disks of a datastore over NBD on
// a unix socket and a TCP address, and writes the profile on SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

func main() {
	dsDir := flag.String("datastore", "", "datastore directory")
	sock := flag.String("nbd-unix", "", "unix socket")
	tcp := flag.String("nbd-tcp", "127.0.0.1:10809", "TCP address")
	prof := flag.String("cpuprofile", "cpu.pprof", "CPU profile output")
	flag.Parse()
	if err := run(*dsDir, *sock, *tcp, *prof); err != nil {
		fmt.Fprintln(os.Stderr, "profserve:", err)
		os.Exit(1)
	}
}

func run(dsDir, sock, tcp, prof string) error {
	ds, err := disk.OpenDatastore(dsDir)
	if err != nil {
		return err
	}
	h := host.New(ds)
	srv := nbd.NewServer(h, nbd.ServerOptions{})
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", tcp)
	if err != nil {
		return err
	}
	pf, err := os.Create(prof)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		return err
	}
	go srv.Serve(ul)
	go srv.Serve(tl)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	pprof.StopCPUProfile()
	pf.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return h.Close()
}

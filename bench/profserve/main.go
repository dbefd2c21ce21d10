// Command profserve is `blockwise serve` with a CPU profile, for
// bench/nbd.sh PROFILE=1: it serves the disks of a datastore over NBD on
// a unix socket and a TCP address, and writes the profile on SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/blockwise/blockwise/bench/internal/profnbd"
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
	err = profnbd.Serve(srv, prof, ul, tl)
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	return err
}

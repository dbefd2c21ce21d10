// Package profnbd serves an NBD server on listeners with a CPU profile
// running until SIGTERM or an interrupt: the common part of the bench
// programs profserve and profpoint.
package profnbd

import (
	"context"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/nbd"
)

// Serve profiles srv into the file prof while it serves every listener,
// until SIGTERM or an interrupt, then shuts it down.
func Serve(srv *nbd.Server, prof string, ls ...net.Listener) error {
	pf, err := os.Create(prof)
	if err != nil {
		return err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return err
	}
	for _, l := range ls {
		go srv.Serve(l) // ends when Shutdown closes l
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	pprof.StopCPUProfile()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

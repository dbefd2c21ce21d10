package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
)

type servePointOptions struct {
	repoOptions
	nbdTLS
	Disk   string
	Socket string
	Listen string
}

var servePointOpts servePointOptions

var servePointCmd = &cobra.Command{
	Use:   "serve-point ID|latest",
	Short: "Serve a restore point read-only over NBD straight from the repository (instant recovery), until interrupted",
	Long: `Serve a restore point read-only over NBD straight from the repository,
without restoring it: qemu-img, nbdcopy and nbdinfo read it, and a VM boots
from it through a qcow2 overlay that takes its writes:

  blockwise serve-point latest --disk vm1 --socket /run/vm1-point.sock
  qemu-img create -f qcow2 -F raw -b 'nbd+unix:///?socket=/run/vm1-point.sock' vm1-overlay.qcow2

Every chunk is verified as it is read; a damaged one fails that read with
EIO and is logged with its offset. Zero chunks are holes (base:allocation).
The repository stays locked (shared) while serving, so a prune waits.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runServePoint(cmd.Context(), servePointOpts, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
	},
}

func init() {
	addRepoFlags(servePointCmd, &servePointOpts.repoOptions)
	f := servePointCmd.Flags()
	f.StringVar(&servePointOpts.Disk, "disk", "", "with latest: the disk whose newest restore point to serve")
	f.StringVar(&servePointOpts.Socket, "socket", "", "unix socket to serve on (default: blockwise-point-ID.sock in the temporary directory)")
	f.StringVar(&servePointOpts.Listen, "listen", "", "also serve on this TCP address (HOST:PORT; with --tls-cert/--tls-key clients can start TLS, and --tls-required makes them)")
	addNBDTLSFlags(f, &servePointOpts.nbdTLS)
	rootCmd.AddCommand(servePointCmd)
}

func runServePoint(ctx context.Context, o servePointOptions, ref string, out, errOut io.Writer) error {
	r, m, err := o.openPoint(ctx, ref, o.Disk)
	if err != nil {
		return err
	}
	defer r.Close()
	lock, err := r.LockRead(ctx)
	if err != nil {
		return err
	}
	defer lock.KeepFresh(ctx)()
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(errOut, nil))
	sopts, err := o.nbdTLS.serverOptions(log)
	if err != nil {
		return err
	}
	exp := backup.NewPointExport(im)
	exp.OnError = func(off int64, err error) { log.Error("read failed", "point", m.ID.Short(), "offset", off, "err", err) }
	lns, uris, err := pointListeners(o, m.ID.Short(), sopts.TLSConfig != nil)
	if err != nil {
		return err
	}
	for _, u := range uris {
		fmt.Fprintln(out, u)
	}
	return servePoint(ctx, nbd.NewServer(backup.PointExporter{Export: exp}, sopts), lns)
}

// pointListeners opens the unix socket (and the TCP address, if any) and
// returns the URIs a client uses.
func pointListeners(o servePointOptions, id string, tls bool) ([]net.Listener, []string, error) {
	// Whoever connects reads the decrypted disk: the owner only.
	lns, err := listenUnix(os.TempDir(), o.Socket, "blockwise-point-"+id+".sock", 0o600, -1)
	if err != nil {
		return nil, nil, &usageError{fmt.Errorf("--socket: %w", err)}
	}
	var uris []string
	for _, l := range lns {
		uris = append(uris, (&url.URL{Scheme: "nbd+unix", Path: "/", RawQuery: "socket=" + l.Addr().String()}).String())
	}
	if o.Listen != "" {
		tl, err := net.Listen("tcp", o.Listen)
		if err != nil {
			closeAll(lns)
			return nil, nil, &usageError{fmt.Errorf("--listen: %w", err)}
		}
		lns = append(lns, tl)
		scheme := "nbd"
		if tls {
			scheme = "nbds"
		}
		uris = append(uris, scheme+"://"+tl.Addr().String()+"/")
	}
	if len(lns) == 0 {
		return nil, nil, &usageError{errors.New(`--socket none needs --listen`)}
	}
	return lns, uris, nil
}

// servePoint serves until ctx ends (SIGINT, SIGTERM) or a listener
// fails, then lets requests in flight finish for a few seconds.
func servePoint(ctx context.Context, srv *nbd.Server, lns []net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	serveNBD(g, slog.New(slog.DiscardHandler), []nbdServer{{srv: srv, lns: lns}})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

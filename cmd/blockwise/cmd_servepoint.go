package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/nbd"
)

type servePointOptions struct {
	repoOptions
	nbdTLS
	Disk   string
	Socket string
	Listen string
	// ClientCA verifies the client certificates a TCP listener requires;
	// ListenInsecure serves TCP to anyone instead (loudly).
	ClientCA       string
	ListenInsecure bool
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
	f.StringVar(&servePointOpts.Listen, "listen", "", "also serve on this TCP address (HOST:PORT): needs --tls-cert, --tls-key and --tls-client-ca, since whoever connects reads the decrypted disk")
	f.StringVar(&servePointOpts.ClientCA, "tls-client-ca", "", "CA (PEM) whose client certificates may connect over --listen (TLS 1.3 required; qemu's tls-creds-x509 and libnbd's tls-certificates send client-cert.pem)")
	f.BoolVar(&servePointOpts.ListenInsecure, "listen-insecure-no-auth", false, "INSECURE: serve --listen to anyone who can reach it, TLS optional, no client certificate")
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
	unixOpts, err := o.nbdTLS.ServerOptions(log)
	if err != nil {
		return err
	}
	tcpOpts, err := o.pointServerOptions(log)
	if err != nil {
		return err
	}
	exp := backup.NewPointExport(im)
	exp.OnError = func(off int64, err error) { log.Error("read failed", "point", m.ID.Short(), "offset", off, "err", err) }
	lns, uris, err := pointListeners(o, m.ID.Short(), tcpOpts.TLSConfig != nil)
	if err != nil {
		return err
	}
	for _, u := range uris {
		fmt.Fprintln(out, u)
	}
	exporter := backup.PointExporter{Export: exp}
	unix, tcp := daemon.NBDServer{Server: nbd.NewServer(exporter, unixOpts)}, daemon.NBDServer{Server: nbd.NewServer(exporter, tcpOpts)}
	for _, l := range lns {
		if l.Addr().Network() == "unix" {
			unix.Listeners = append(unix.Listeners, l)
		} else {
			tcp.Listeners = append(tcp.Listeners, l)
		}
	}
	return servePoint(ctx, []daemon.NBDServer{unix, tcp})
}

// pointServerOptions: the unix socket is protected by its mode; a TCP
// listener is not, so it requires TLS and a client certificate from
// --tls-client-ca (as the host's NBD TCP listeners require tickets),
// unless --listen-insecure-no-auth says otherwise.
func (o servePointOptions) pointServerOptions(log *slog.Logger) (nbd.ServerOptions, error) {
	switch {
	case o.Listen == "" && (o.ClientCA != "" || o.ListenInsecure):
		return nbd.ServerOptions{}, usageErrorf("--tls-client-ca and --listen-insecure-no-auth go with --listen")
	case o.Listen != "" && o.ListenInsecure && o.ClientCA != "":
		return nbd.ServerOptions{}, usageErrorf("--listen-insecure-no-auth and --tls-client-ca: give one or the other")
	case o.Listen != "" && o.ListenInsecure:
		log.Warn("serve-point --listen-insecure-no-auth: anyone who reaches " + o.Listen + " reads the decrypted disk")
		return o.nbdTLS.ServerOptions(log)
	case o.Listen == "":
		return o.nbdTLS.ServerOptions(log)
	case o.ClientCA == "" || o.TLSCert == "" || o.TLSKey == "":
		return nbd.ServerOptions{}, usageErrorf("--listen needs --tls-cert, --tls-key and --tls-client-ca (client certificates), or --listen-insecure-no-auth")
	}
	opts, err := o.nbdTLS.ServerOptions(log)
	if err != nil {
		return opts, err
	}
	pem, err := os.ReadFile(o.ClientCA)
	if err != nil {
		return opts, usageErrorf("--tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return opts, usageErrorf("--tls-client-ca %s: no PEM certificate", o.ClientCA)
	}
	opts.TLSConfig.ClientCAs, opts.TLSConfig.ClientAuth = pool, tls.RequireAndVerifyClientCert
	opts.RequireTLS = true
	return opts, nil
}

// pointListeners opens the unix socket (and the TCP address, if any) and
// returns the URIs a client uses.
func pointListeners(o servePointOptions, id string, tls bool) ([]net.Listener, []string, error) {
	// Whoever connects reads the decrypted disk: the owner only.
	lns, err := daemon.ListenUnix(os.TempDir(), o.Socket, "blockwise-point-"+id+".sock", 0o600, -1)
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
func servePoint(ctx context.Context, srvs []daemon.NBDServer) error {
	g, gctx := errgroup.WithContext(ctx)
	daemon.ServeNBD(g, slog.New(slog.DiscardHandler), srvs)
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var errs []error
		for _, s := range srvs {
			errs = append(errs, s.Server.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	return g.Wait()
}

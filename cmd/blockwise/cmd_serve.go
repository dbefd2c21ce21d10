package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

type serveOptions struct {
	APIUnix    string
	APITCP     string
	APITLSCert string
	APITLSKey  string
	NBDUnix    string
	NBDTCP     []string
	nbdTLS
	log *slog.Logger // nil: text logs on stderr
}

// nbdTLS: STARTTLS for an NBD server (serve, serve-point).
type nbdTLS struct {
	TLSCert     string
	TLSKey      string
	TLSRequired bool
}

func addNBDTLSFlags(f *pflag.FlagSet, o *nbdTLS) {
	f.StringVar(&o.TLSCert, "tls-cert", "", "TLS certificate (PEM) for NBD STARTTLS")
	f.StringVar(&o.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.BoolVar(&o.TLSRequired, "tls-required", false, "refuse NBD clients that do not start TLS")
}

// serverOptions loads the certificate, if any; TLS is 1.3 only.
func (o nbdTLS) serverOptions(log *slog.Logger) (nbd.ServerOptions, error) {
	opts := nbd.ServerOptions{Logger: log, RequireTLS: o.TLSRequired}
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return opts, &usageError{fmt.Errorf("tls: %w", err)}
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	} else if o.TLSRequired {
		return opts, &usageError{errors.New("--tls-required needs --tls-cert and --tls-key")}
	}
	return opts, nil
}

var serveOpts serveOptions

var serveCmd = &cobra.Command{
	Use:   "serve",
	Short: "Run the host: the disk engine, its NBD server and the control API",
	Long: `Serve the datastore's disks over NBD. Export DISK is the live disk
(read-write); DISK@SNAPSHOT is a snapshot (read-only) whose changed blocks
are offered as qemu:dirty-bitmap:<change ID> contexts. The control API
(/v1, /metrics) listens on DATASTORE/api.sock, and with --api-tcp on TCP
with TLS and bearer tokens. SIGTERM drains both, flushes disks, exits 0.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runServe(cmd.Context(), globals, serveOpts)
	},
}

func init() {
	f := serveCmd.Flags()
	f.StringVar(&serveOpts.APIUnix, "api-unix", "", "unix socket for the control API (default DATASTORE/api.sock; \"none\" disables)")
	f.StringVar(&serveOpts.APITCP, "api-tcp", "", "TCP address for the control API (needs --api-tls-cert/--api-tls-key; tokens from `blockwise token`)")
	f.StringVar(&serveOpts.APITLSCert, "api-tls-cert", "", "TLS certificate (PEM) for the API over TCP")
	f.StringVar(&serveOpts.APITLSKey, "api-tls-key", "", "TLS private key (PEM) for the API over TCP")
	f.StringVar(&serveOpts.NBDUnix, "nbd-unix", "", "unix socket for NBD (default DATASTORE/nbd.sock; \"none\" disables)")
	f.StringArrayVar(&serveOpts.NBDTCP, "nbd-tcp", []string{"127.0.0.1:10809"}, "TCP address for NBD, repeatable (\"\" disables)")
	addNBDTLSFlags(f, &serveOpts.nbdTLS)
	rootCmd.AddCommand(serveCmd)
}

func runServe(ctx context.Context, g globalOptions, o serveOptions) error {
	log := o.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ds, err := disk.OpenDatastore(g.Datastore)
	if err != nil {
		return err
	}
	// One server per datastore: a second one would take over its sockets.
	lock, err := fsutil.Lock(filepath.Join(g.Datastore, "serve.lock"))
	if err != nil {
		return fmt.Errorf("datastore %s: %w: another blockwise serve uses it (%v)", g.Datastore, disk.ErrBusy, err)
	}
	defer lock.Close()
	h := host.New(ds)
	srv, err := newNBDServer(h, o, log)
	if err != nil {
		return err
	}
	lns, err := listeners(g.Datastore, o)
	if err != nil {
		return err
	}
	apiSrv := api.New(h, api.Options{Logger: log, Tokens: api.OpenTokens(g.Datastore), Exports: exportConfig(lns, o)})
	apiLns, err := apiListeners(g.Datastore, o)
	if err != nil {
		closeAll(lns)
		return err
	}
	grp, gctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		log.Info("nbd listening", "addr", l.Addr().String())
	}
	serveNBD(grp, srv, lns)
	for _, l := range apiLns {
		log.Info("api listening", "addr", l.Addr().String())
		grp.Go(func() error { return apiSrv.Serve(l) })
	}
	<-gctx.Done()
	return shutdown(log, apiSrv, srv, grp, h)
}

// shutdown drains API requests first (they may use disks), then NBD
// connections, then flushes and closes the disks.
func shutdown(log *slog.Logger, apiSrv *api.Server, srv *nbd.Server, grp *errgroup.Group, h *host.Host) error {
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := errors.Join(apiSrv.Shutdown(sctx), srv.Shutdown(sctx), grp.Wait(), h.Close())
	if err == nil {
		log.Info("stopped cleanly")
	}
	return err
}

func newNBDServer(h *host.Host, o serveOptions, log *slog.Logger) (*nbd.Server, error) {
	opts, err := o.nbdTLS.serverOptions(log)
	if err != nil {
		return nil, err
	}
	return nbd.NewServer(h, opts), nil
}

// serveNBD runs srv on every listener in grp; a server shut down ends
// them cleanly.
func serveNBD(grp *errgroup.Group, srv *nbd.Server, lns []net.Listener) {
	for _, l := range lns {
		grp.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
}

// listenUnix listens on path (default: name in the datastore; "none": no
// socket), readable by the owner only when private.
func listenUnix(dsDir, path, name string, private bool) ([]net.Listener, error) {
	if path == "" {
		path = filepath.Join(dsDir, name)
	}
	if path == "none" {
		return nil, nil
	}
	os.Remove(path) // a stale socket of a stopped server (serve.lock excludes a live one)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if private {
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, err
		}
	}
	return []net.Listener{l}, nil
}

func listeners(dsDir string, o serveOptions) ([]net.Listener, error) {
	out, err := listenUnix(dsDir, o.NBDUnix, "nbd.sock", false)
	if err != nil {
		return nil, err
	}
	for _, a := range o.NBDTCP {
		if a == "" {
			continue
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// exportConfig tells the API where NBD listens, for the URIs it hands out.
func exportConfig(lns []net.Listener, o serveOptions) api.ExportConfig {
	c := api.ExportConfig{TLS: o.TLSCert != "", TLSRequired: o.TLSRequired}
	for _, l := range lns {
		if l.Addr().Network() == "unix" {
			c.UnixSocket = l.Addr().String()
		} else {
			c.TCP = append(c.TCP, l.Addr().String())
		}
	}
	return c
}

// apiListeners: the unix socket is 0600, which is its whole protection;
// TCP is TLS only, since bearer tokens must not travel in clear.
func apiListeners(dsDir string, o serveOptions) ([]net.Listener, error) {
	out, err := listenUnix(dsDir, o.APIUnix, "api.sock", true)
	if err != nil {
		return nil, err
	}
	if o.APITCP == "" {
		return out, nil
	}
	if o.APITLSCert == "" || o.APITLSKey == "" {
		closeAll(out)
		return nil, usageErrorf("--api-tcp needs --api-tls-cert and --api-tls-key: tokens must not travel in clear")
	}
	cert, err := tls.LoadX509KeyPair(o.APITLSCert, o.APITLSKey)
	if err != nil {
		closeAll(out)
		return nil, fmt.Errorf("api tls: %w", err)
	}
	l, err := tls.Listen("tcp", o.APITCP, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		closeAll(out)
		return nil, err
	}
	return append(out, l), nil
}

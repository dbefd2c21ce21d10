package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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
	NBDGroup   string
	NBDTCP     []string
	// NBDInsecure serves plain NBD on TCP to anyone who connects.
	NBDInsecure bool
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
with TLS and bearer tokens. SIGTERM drains both, flushes disks, exits 0.

NBD listens on DATASTORE/nbd.sock, mode 0600 (0660 with
--nbd-socket-group): only its owner connects, and needs nothing else.
There is no TCP listener unless --nbd-tcp asks for one, and a TCP
listener serves TLS with a ticket only: a client certificate issued by
"blockwise ticket create EXPORT" (or POST .../tickets), signed by the
host's CA in DATASTORE/pki, good for one export until it expires or is
revoked. Without --tls-cert/--tls-key the host signs its own server
certificate with that CA. --nbd-tcp-insecure-no-auth serves plain NBD on
TCP to anyone who can connect instead: every disk readable and writable
by every local user, or the whole network.`,
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
	f.StringVar(&serveOpts.NBDUnix, "nbd-unix", "", "unix socket for NBD, mode 0600 (default DATASTORE/nbd.sock; \"none\" disables)")
	f.StringVar(&serveOpts.NBDGroup, "nbd-socket-group", "", "make the NBD unix socket 0660 and owned by this group (name or GID)")
	f.StringArrayVar(&serveOpts.NBDTCP, "nbd-tcp", nil, "TCP address for NBD (TLS with a ticket from `blockwise ticket create`), repeatable; default none")
	f.BoolVar(&serveOpts.NBDInsecure, "nbd-tcp-insecure-no-auth", false, "DANGER: serve --nbd-tcp without tickets, to anyone who connects (plain NBD unless --tls-cert)")
	addNBDTLSFlags(f, &serveOpts.nbdTLS)
	rootCmd.AddCommand(serveCmd)
}

func runServe(ctx context.Context, g globalOptions, o serveOptions) error {
	log := o.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.NBDInsecure && len(nonEmpty(o.NBDTCP)) == 0 {
		return usageErrorf("--nbd-tcp-insecure-no-auth needs --nbd-tcp")
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
	lns, err := listeners(g.Datastore, o)
	if err != nil {
		return err
	}
	tokens := api.OpenTokens(g.Datastore)
	exports := exportConfig(lns, o)
	tickets := api.NewHostTickets(h, tokens, exports)
	srvs, err := newNBDServers(h, o, tickets, lns, log)
	if err != nil {
		closeAll(lns.all())
		return err
	}
	apiSrv := api.New(h, api.Options{Logger: log, Tokens: tokens, Exports: exports, Tickets: tickets})
	apiLns, err := apiListeners(g.Datastore, o)
	if err != nil {
		closeAll(lns.all())
		return err
	}
	grp, gctx := errgroup.WithContext(ctx)
	serveNBD(grp, log, srvs)
	for _, l := range apiLns {
		log.Info("api listening", "addr", l.Addr().String())
		grp.Go(func() error { return apiSrv.Serve(l) })
	}
	<-gctx.Done()
	return shutdown(log, apiSrv, srvs, grp, h)
}

// shutdown drains API requests first (they may use disks), then NBD
// connections, then flushes and closes the disks.
func shutdown(log *slog.Logger, apiSrv *api.Server, srvs []nbdServer, grp *errgroup.Group, h *host.Host) error {
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := []error{apiSrv.Shutdown(sctx)}
	for _, s := range srvs {
		errs = append(errs, s.srv.Shutdown(sctx))
	}
	err := errors.Join(append(errs, grp.Wait(), h.Close())...)
	if err == nil {
		log.Info("stopped cleanly")
	}
	return err
}

// nbdServer is an NBD server and the listeners it serves: the unix
// socket's needs no ticket, TCP's does (unless insecure).
type nbdServer struct {
	srv *nbd.Server
	lns []net.Listener
}

// nbdListeners are the unix socket (0 or 1) and the TCP listeners.
type nbdListeners struct {
	unix, tcp []net.Listener
}

func (l nbdListeners) all() []net.Listener {
	return append(append([]net.Listener(nil), l.unix...), l.tcp...)
}

func newNBDServers(h *host.Host, o serveOptions, tickets *api.Tickets, lns nbdListeners, log *slog.Logger) ([]nbdServer, error) {
	opts, err := o.nbdTLS.serverOptions(log)
	if err != nil {
		return nil, err
	}
	out := []nbdServer{{srv: nbd.NewServer(h, opts), lns: lns.unix}}
	if len(lns.tcp) == 0 {
		return out, nil
	}
	if o.NBDInsecure {
		log.Warn("NBD over TCP WITHOUT AUTHENTICATION (--nbd-tcp-insecure-no-auth): anyone who can connect reads and writes every disk",
			"addrs", addrs(lns.tcp))
		return append(out, nbdServer{srv: nbd.NewServer(h, opts), lns: lns.tcp}), nil
	}
	tcpOpts, err := ticketOptions(o, tickets, lns.tcp, log)
	if err != nil {
		return nil, err
	}
	return append(out, nbdServer{srv: nbd.NewServer(h, tcpOpts), lns: lns.tcp}), nil
}

// ticketOptions: TLS 1.3 required, a client certificate from the host's
// CA required, and the ticket it stands for checked at the handshake and
// for every export named. The server certificate is the operator's, or
// one the host's CA issues for the listen addresses.
func ticketOptions(o serveOptions, tickets *api.Tickets, tcp []net.Listener, log *slog.Logger) (nbd.ServerOptions, error) {
	var cert tls.Certificate
	var err error
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err = tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nbd.ServerOptions{}, &usageError{fmt.Errorf("tls: %w", err)}
		}
	} else {
		ca, err := tickets.CA()
		if err != nil {
			return nbd.ServerOptions{}, err
		}
		if cert, err = ca.ServerCert(listenHosts(tcp)); err != nil {
			return nbd.ServerOptions{}, err
		}
	}
	cfg, err := tickets.ServerTLS(cert)
	if err != nil {
		return nbd.ServerOptions{}, err
	}
	return nbd.ServerOptions{Logger: log, TLSConfig: cfg, RequireTLS: true, Authorize: tickets.Authorize}, nil
}

func listenHosts(lns []net.Listener) []string {
	var out []string
	for _, l := range lns {
		if h, _, err := net.SplitHostPort(l.Addr().String()); err == nil {
			out = append(out, h)
		}
	}
	return out
}

func addrs(lns []net.Listener) []string {
	var out []string
	for _, l := range lns {
		out = append(out, l.Addr().String())
	}
	return out
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// serveNBD runs each server on its listeners in grp; a server shut down
// ends them cleanly.
func serveNBD(grp *errgroup.Group, log *slog.Logger, srvs []nbdServer) {
	for _, s := range srvs {
		for _, l := range s.lns {
			log.Info("nbd listening", "addr", l.Addr().String())
			grp.Go(func() error {
				if err := s.srv.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
					return err
				}
				return nil
			})
		}
	}
}

// listenUnix listens on path (default: name in the datastore; "none": no
// socket) with the given mode and group (-1: the process's).
func listenUnix(dsDir, path, name string, mode os.FileMode, gid int) ([]net.Listener, error) {
	if path == "" {
		path = filepath.Join(dsDir, name)
	}
	if path == "none" {
		return nil, nil
	}
	os.Remove(path) // a stale socket of a stopped server (serve.lock excludes a live one)
	l, err := fsutil.ListenUnix(path, mode, gid)
	if err != nil {
		return nil, err
	}
	return []net.Listener{l}, nil
}

// socketGroup resolves --nbd-socket-group: -1 when unset.
func socketGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	grp, err := user.LookupGroup(name)
	if err != nil {
		return 0, usageErrorf("--nbd-socket-group: %v", err)
	}
	return strconv.Atoi(grp.Gid)
}

func listeners(dsDir string, o serveOptions) (nbdListeners, error) {
	var out nbdListeners
	gid, err := socketGroup(o.NBDGroup)
	if err != nil {
		return out, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
	}
	if out.unix, err = listenUnix(dsDir, o.NBDUnix, "nbd.sock", mode, gid); err != nil {
		return out, err
	}
	for _, a := range nonEmpty(o.NBDTCP) {
		l, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(out.all())
			return nbdListeners{}, err
		}
		out.tcp = append(out.tcp, l)
	}
	return out, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// exportConfig tells the API where NBD listens, for the URIs it hands out.
func exportConfig(lns nbdListeners, o serveOptions) api.ExportConfig {
	c := api.ExportConfig{TLS: o.TLSCert != "" || !o.NBDInsecure, TLSRequired: o.TLSRequired, Insecure: o.NBDInsecure}
	for _, l := range lns.unix {
		c.UnixSocket = l.Addr().String()
	}
	c.TCP = addrs(lns.tcp)
	return c
}

// apiListeners: the unix socket is 0600, which is its whole protection;
// TCP is TLS only, since bearer tokens must not travel in clear.
func apiListeners(dsDir string, o serveOptions) ([]net.Listener, error) {
	out, err := listenUnix(dsDir, o.APIUnix, "api.sock", 0o600, -1)
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

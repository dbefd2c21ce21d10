package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

// NBDTLS is STARTTLS for an NBD server (serve, serve-point): the
// operator's certificate and key (PEM files) and whether clients must
// start TLS.
type NBDTLS struct {
	TLSCert     string
	TLSKey      string
	TLSRequired bool
}

// ServerOptions loads the certificate, if any; TLS is 1.3 only. A
// certificate that does not load, or TLSRequired without one, is
// ErrConfig.
func (o NBDTLS) ServerOptions(log *slog.Logger) (nbd.ServerOptions, error) {
	opts := nbd.ServerOptions{Logger: log, RequireTLS: o.TLSRequired}
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return opts, configErrorf("tls: %w", err)
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	} else if o.TLSRequired {
		return opts, configErrorf("--tls-required needs --tls-cert and --tls-key")
	}
	return opts, nil
}

// NBDServer is an NBD server and the listeners it serves (the host's:
// the unix socket's needs no ticket, TCP's does unless insecure).
type NBDServer struct {
	Server    *nbd.Server
	Listeners []net.Listener
}

// nbdListeners are the unix socket (0 or 1) and the TCP listeners.
type nbdListeners struct {
	unix, tcp []net.Listener
}

func (l nbdListeners) all() []net.Listener {
	return append(append([]net.Listener(nil), l.unix...), l.tcp...)
}

func newNBDServers(h *host.Host, o Options, tickets *api.Tickets, lns nbdListeners, log *slog.Logger) ([]NBDServer, error) {
	opts, err := o.NBDTLS.ServerOptions(log)
	if err != nil {
		return nil, err
	}
	out := []NBDServer{{Server: nbd.NewServer(h, opts), Listeners: lns.unix}}
	if len(lns.tcp) == 0 {
		return out, nil
	}
	if o.NBDInsecure {
		log.Warn("NBD over TCP WITHOUT AUTHENTICATION (--nbd-tcp-insecure-no-auth): anyone who can connect reads and writes every disk",
			"addrs", addrs(lns.tcp))
		return append(out, NBDServer{Server: nbd.NewServer(h, opts), Listeners: lns.tcp}), nil
	}
	tcpOpts, err := ticketOptions(o, tickets, lns.tcp, log)
	if err != nil {
		return nil, err
	}
	return append(out, NBDServer{Server: nbd.NewServer(h, tcpOpts), Listeners: lns.tcp}), nil
}

// ticketOptions: TLS 1.3 required, a client certificate from the host's
// CA required, and the ticket it stands for checked at the handshake and
// for every export named. The server certificate is the operator's, or
// one the host's CA issues for the listen addresses.
func ticketOptions(o Options, tickets *api.Tickets, tcp []net.Listener, log *slog.Logger) (nbd.ServerOptions, error) {
	var cert tls.Certificate
	var err error
	if o.NBDTLS.TLSCert != "" || o.NBDTLS.TLSKey != "" {
		cert, err = tls.LoadX509KeyPair(o.NBDTLS.TLSCert, o.NBDTLS.TLSKey)
		if err != nil {
			return nbd.ServerOptions{}, configErrorf("tls: %w", err)
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

// ServeNBD runs each server on its listeners in grp; a server shut down
// ends them cleanly (nil).
func ServeNBD(grp *errgroup.Group, log *slog.Logger, srvs []NBDServer) {
	for _, s := range srvs {
		for _, l := range s.Listeners {
			log.Info("nbd listening", "addr", l.Addr().String())
			grp.Go(func() error {
				if err := s.Server.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
					return err
				}
				return nil
			})
		}
	}
}

// ListenUnix listens on path (default: name in dir; "none": no socket)
// with the given mode and group (-1: the process's). A stale socket at
// path is removed first: the caller holds whatever lock excludes a live
// server there.
func ListenUnix(dir, path, name string, mode os.FileMode, gid int) ([]net.Listener, error) {
	if path == "" {
		path = filepath.Join(dir, name)
	}
	if path == "none" {
		return nil, nil
	}
	os.Remove(path)
	l, err := fsutil.ListenUnix(path, mode, gid)
	if err != nil {
		return nil, err
	}
	return []net.Listener{l}, nil
}

// socketGroup resolves Options.NBDGroup: -1 when unset.
func socketGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	grp, err := user.LookupGroup(name)
	if err != nil {
		return 0, configErrorf("--nbd-socket-group: %v", err)
	}
	return strconv.Atoi(grp.Gid)
}

func nbdListen(o Options) (nbdListeners, error) {
	var out nbdListeners
	gid, err := socketGroup(o.NBDGroup)
	if err != nil {
		return out, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
	}
	if out.unix, err = ListenUnix(o.Datastore, o.NBDUnix, "nbd.sock", mode, gid); err != nil {
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
func exportConfig(lns nbdListeners, o Options) api.ExportConfig {
	c := api.ExportConfig{TLS: o.NBDTLS.TLSCert != "" || !o.NBDInsecure, TLSRequired: o.NBDTLS.TLSRequired, Insecure: o.NBDInsecure}
	for _, l := range lns.unix {
		c.UnixSocket = l.Addr().String()
	}
	c.TCP = addrs(lns.tcp)
	return c
}

// apiListen: the unix socket is 0600, which is its whole protection; TCP
// is TLS only, since bearer tokens must not travel in clear.
func apiListen(o Options) ([]net.Listener, error) {
	out, err := ListenUnix(o.Datastore, o.APIUnix, "api.sock", 0o600, -1)
	if err != nil {
		return nil, err
	}
	if o.APITCP == "" {
		return out, nil
	}
	if o.APITLSCert == "" || o.APITLSKey == "" {
		closeAll(out)
		return nil, configErrorf("--api-tcp needs --api-tls-cert and --api-tls-key: tokens must not travel in clear")
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

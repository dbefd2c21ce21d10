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
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/repo"
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
	// Writable serves the point read-write, the writes kept in Overlay.
	Writable bool
	Overlay  string
	// CacheMB sizes the cache of decoded chunks; ReadAhead is how many
	// chunks small sequential reads load ahead.
	CacheMB   int
	ReadAhead int
}

var servePointOpts servePointOptions

var servePointCmd = &cobra.Command{
	Use:   "serve-point ID|latest",
	Short: "Serve a restore point over NBD straight from the repository (instant recovery), read-only or with writes in a local overlay, until interrupted",
	Long: `Serve a restore point over NBD straight from the repository, without
restoring it: qemu-img, nbdcopy and nbdinfo read it, and a VM boots from it.

Read-only (the default), a VM boots through a qcow2 overlay of its own:

  blockwise serve-point latest --disk vm1 --socket /run/vm1-point.sock
  qemu-img create -f qcow2 -F raw -b 'nbd+unix:///?socket=/run/vm1-point.sock' vm1-overlay.qcow2

With --writable --overlay DIR the export takes writes itself: they go to a
sparse data file and a checksummed map journal in DIR (synced on every NBD
FLUSH, so a flushed write survives a crash; the backup is never modified),
and a VM boots from the export directly with the printed -drive line.
Serving again with the same DIR continues with the same writes. To move
the running VM onto a real disk, see "blockwise recover".

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
	addPointServeFlags(f, &servePointOpts)
	f.BoolVar(&servePointOpts.Writable, "writable", false, "serve read-write, the writes kept in --overlay (the backup is never modified)")
	f.StringVar(&servePointOpts.Overlay, "overlay", "", "with --writable: directory of the overlay that keeps the writes (created, or reopened to continue)")
	rootCmd.AddCommand(servePointCmd)
}

// addPointServeFlags adds the flags serve-point and recover share.
func addPointServeFlags(f *pflag.FlagSet, o *servePointOptions) {
	f.StringVar(&o.Socket, "socket", "", "unix socket to serve on (default: blockwise-point-ID.sock in the temporary directory)")
	f.StringVar(&o.Listen, "listen", "", "also serve on this TCP address (HOST:PORT): needs --tls-cert, --tls-key and --tls-client-ca, since whoever connects reads the decrypted disk")
	f.StringVar(&o.ClientCA, "tls-client-ca", "", "CA (PEM) whose client certificates may connect over --listen (TLS 1.3 required; qemu's tls-creds-x509 and libnbd's tls-certificates send client-cert.pem)")
	f.BoolVar(&o.ListenInsecure, "listen-insecure-no-auth", false, "INSECURE: serve --listen to anyone who can reach it, TLS optional, no client certificate")
	f.IntVar(&o.CacheMB, "cache-mb", 64, "MiB of decoded chunks kept in memory (a booting VM rereads its working set; on S3 every miss is a request)")
	f.IntVar(&o.ReadAhead, "read-ahead", 16, "chunks loaded ahead of small sequential reads (0: off)")
	addNBDTLSFlags(f, &o.nbdTLS)
}

func runServePoint(ctx context.Context, o servePointOptions, ref string, out, errOut io.Writer) error {
	switch {
	case o.Writable && o.Overlay == "":
		return usageErrorf("--writable needs --overlay DIR")
	case !o.Writable && o.Overlay != "":
		return usageErrorf("--overlay goes with --writable")
	}
	if st, err := backup.LoadRecoverState(o.Overlay); o.Writable && err == nil {
		return usageErrorf("--overlay %s belongs to a recovery to disk %s (%s): continue it with blockwise recover --resume", o.Overlay, st.Disk, st.Phase)
	}
	sp, err := openServedPoint(ctx, o, ref, errOut)
	if err != nil {
		return err
	}
	defer sp.close()
	var exporter nbd.Exporter = backup.PointExporter{Export: sp.exp}
	if o.Writable {
		w, err := sp.writable(o.Overlay)
		if err != nil {
			return err
		}
		exporter = backup.WritableExporter{Export: w}
	}
	return sp.serve(ctx, o, exporter, out, nil)
}

// servedPoint is an open restore point being served.
type servedPoint struct {
	r    *repo.Repository
	m    *repo.Manifest
	exp  *backup.PointExport
	ov   *overlay.Overlay
	log  *slog.Logger
	done []func()
}

// openServedPoint opens the point, locks the repository (shared) and
// sizes the chunk cache and read-ahead.
func openServedPoint(ctx context.Context, o servePointOptions, ref string, errOut io.Writer) (*servedPoint, error) {
	if o.CacheMB < 0 || o.ReadAhead < 0 {
		return nil, usageErrorf("--cache-mb and --read-ahead cannot be negative")
	}
	r, m, err := o.openPoint(ctx, ref, o.Disk)
	if err != nil {
		return nil, err
	}
	sp := &servedPoint{r: r, m: m, log: slog.New(slog.NewTextHandler(errOut, nil))}
	sp.done = append(sp.done, func() { r.Close() })
	lock, err := r.LockRead(ctx)
	if err != nil {
		sp.close()
		return nil, err
	}
	stop := lock.KeepFresh(ctx)
	sp.done = append(sp.done, func() { stop() })
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		sp.close()
		return nil, err
	}
	im.SetCacheChunks(int((int64(o.CacheMB) << 20) / int64(im.ChunkSize())))
	sp.exp = backup.NewPointExport(im)
	sp.exp.SetReadAhead(ctx, o.ReadAhead)
	sp.done = append(sp.done, sp.exp.Wait)
	sp.exp.OnError = func(off int64, err error) {
		sp.log.Error("read failed", "point", m.ID.Short(), "offset", off, "err", err)
	}
	return sp, nil
}

// writable opens the overlay in dir and returns the read-write export.
func (sp *servedPoint) writable(dir string) (*backup.WritableExport, error) {
	ov, err := overlay.Open(dir, sp.m.ID.String(), int64(sp.m.Size))
	if err != nil {
		return nil, err
	}
	sp.ov = ov
	w, err := backup.NewWritableExport(sp.exp, ov)
	if err != nil {
		return nil, err
	}
	w.OnError = func(op string, off int64, err error) {
		sp.log.Error(op+" failed", "point", sp.m.ID.Short(), "offset", off, "err", err)
	}
	return w, nil
}

// close syncs and closes the overlay, then what openServedPoint opened.
func (sp *servedPoint) close() {
	if sp.ov != nil {
		if err := sp.ov.Sync(); err != nil {
			sp.log.Error("overlay sync at exit", "err", err)
		}
		sp.ov.Close()
	}
	for i := len(sp.done) - 1; i >= 0; i-- {
		sp.done[i]()
	}
}

// serve listens, prints the URIs (and, writable, how to attach them)
// and serves exporter until ctx ends; work, if set, runs beside the
// server and is cancelled with it.
func (sp *servedPoint) serve(ctx context.Context, o servePointOptions, exporter nbd.Exporter, out io.Writer, work func(context.Context)) error {
	unixOpts, err := o.nbdTLS.ServerOptions(sp.log)
	if err != nil {
		return err
	}
	tcpOpts, err := o.pointServerOptions(sp.log)
	if err != nil {
		return err
	}
	lns, uris, err := pointListeners(o, sp.m.ID.Short(), tcpOpts.TLSConfig != nil)
	if err != nil {
		return err
	}
	for _, u := range uris {
		fmt.Fprintln(out, u)
	}
	if sp.ov != nil || work != nil {
		printAttach(out, lns, sp.m.ID.Short())
	}
	unix, tcp := daemon.NBDServer{Server: nbd.NewServer(exporter, unixOpts)}, daemon.NBDServer{Server: nbd.NewServer(exporter, tcpOpts)}
	for _, l := range lns {
		if l.Addr().Network() == "unix" {
			unix.Listeners = append(unix.Listeners, l)
		} else {
			tcp.Listeners = append(tcp.Listeners, l)
		}
	}
	return servePoint(ctx, []daemon.NBDServer{unix, tcp}, work)
}

// printAttach prints how QEMU and libvirt attach the unix socket's
// export. reconnect-delay makes QEMU retry (I/O paused, not failed) while
// blockwise restarts, e.g. for recover --resume.
func printAttach(out io.Writer, lns []net.Listener, name string) {
	for _, l := range lns {
		if l.Addr().Network() != "unix" {
			continue
		}
		sock := l.Addr().String()
		fmt.Fprintf(out, "qemu-system-x86_64 ... -drive driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=%s,file.export=%s,file.reconnect-delay=30,cache=none,if=virtio\n", sock, name)
		fmt.Fprintf(out, "virsh attach-disk DOMAIN %s vdb --sourcetype network --source-protocol nbd --source-host-transport unix --source-host-socket %s --driver qemu --subdriver raw --cache none --targetbus virtio --live\n", name, sock)
	}
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
func servePoint(ctx context.Context, srvs []daemon.NBDServer, work func(context.Context)) error {
	g, gctx := errgroup.WithContext(ctx)
	daemon.ServeNBD(g, slog.New(slog.DiscardHandler), srvs)
	if work != nil {
		g.Go(func() error { work(gctx); return nil })
	}
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

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

// ErrConfig marks invalid Options (the CLI's usage error): errors.Is
// matches it, while the message is the problem alone.
var ErrConfig = errors.New("invalid host configuration")

// configError is an error of invalid Options.
type configError struct{ err error }

// Error implements error.
func (e *configError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error, for errors.As.
func (e *configError) Unwrap() error { return e.err }

// Is makes every configError match ErrConfig.
func (e *configError) Is(target error) bool { return target == ErrConfig }

func configErrorf(format string, a ...any) error {
	return &configError{fmt.Errorf(format, a...)}
}

// DefaultShutdownTimeout bounds a graceful stop when Options leave it 0.
const DefaultShutdownTimeout = 30 * time.Second

// Options are the settings of one host process.
type Options struct {
	// Datastore is the directory of the disks (required).
	Datastore string
	// APIUnix is the API's unix socket: "" for DATASTORE/api.sock, "none"
	// for no socket.
	APIUnix string
	// APITCP, when set, serves the API on TCP with TLS (APITLSCert,
	// APITLSKey required) and bearer tokens.
	APITCP, APITLSCert, APITLSKey string
	// NBDUnix is the NBD unix socket: "" for DATASTORE/nbd.sock, "none"
	// for no socket. It is 0600, or 0660 owned by NBDGroup when that is
	// set (a group name or GID).
	NBDUnix, NBDGroup string
	// NBDTCP are TCP addresses for NBD (TLS with tickets).
	NBDTCP []string
	// NBDInsecure serves NBDTCP without tickets to anyone who connects.
	NBDInsecure bool
	// NBDTLS is the operator's NBD certificate (without one, TCP uses a
	// certificate from the host's CA) and whether STARTTLS is required on
	// the unix socket too.
	NBDTLS NBDTLS
	// ShutdownTimeout bounds a graceful stop (0: DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Logger receives the host's logs (nil: text on stderr).
	Logger *slog.Logger
	// SpaceWarn is the soft threshold of datastore use, a ratio in (0, 1]
	// (0: host.DefaultSpaceWarn); SpaceCheck how often the log is told
	// (0: DefaultSpaceCheck).
	SpaceWarn  float64
	SpaceCheck time.Duration
	// NoHashTrees: the disks keep no snapshot hash trees (snapshot roots
	// answer tree-unavailable); docs/format.md T1–T6.
	NoHashTrees bool
	// Points serves the files of a repository's restore points over
	// the API (nil: none).
	Points api.Points
}

// Service is a long-running part of the host besides its listeners (the
// backup scheduler, replication). Start must return once the service
// runs (its goroutines are its own); Stop must end them before it
// returns or ctx (the shutdown deadline) ends.
type Service interface {
	Start(ctx context.Context, d *Daemon) error
	Stop(ctx context.Context) error
}

// Daemon is one host process: the engine and everything serving it.
type Daemon struct {
	opts     Options
	log      *slog.Logger
	lock     *os.File
	host     *host.Host
	api      *api.Server
	jobs     *jobs.Store
	apiLns   []net.Listener
	nbd      []NBDServer
	services []Service
}

// New opens the datastore, takes its lock and binds every listener. The
// caller either Serves the daemon or Closes it.
func New(o Options) (_ *Daemon, err error) {
	if o.Datastore == "" {
		return nil, configErrorf("no datastore")
	}
	if o.NBDInsecure && len(nonEmpty(o.NBDTCP)) == 0 {
		return nil, configErrorf("--nbd-tcp-insecure-no-auth needs --nbd-tcp")
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	d := &Daemon{opts: o, log: o.Logger}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ds, err := disk.OpenDatastore(o.Datastore, disk.WithHashTrees(!o.NoHashTrees))
	if err != nil {
		return nil, err
	}
	// One server per datastore: a second one would take over its sockets.
	if d.lock, err = fsutil.Lock(filepath.Join(o.Datastore, "serve.lock")); err != nil {
		return nil, fmt.Errorf("datastore %s: %w: another blockwise serve uses it (%v)", o.Datastore, disk.ErrBusy, err)
	}
	defer func() {
		if err != nil {
			d.closeListeners()
			d.lock.Close()
		}
	}()
	// The job history: a job a dead host left running is marked
	// interrupted here, before anything can run a new one.
	if d.jobs, err = jobs.Open(filepath.Join(o.Datastore, "jobs.db"), jobs.Options{}); err != nil {
		return nil, err
	}
	d.host = host.New(ds)
	if o.SpaceWarn != 0 {
		if err := d.host.SetSpaceWarn(o.SpaceWarn); err != nil {
			return nil, configErrorf("%v", err)
		}
	}
	if o.SpaceCheck <= 0 {
		o.SpaceCheck = DefaultSpaceCheck
	}
	d.services = append(d.services, &spaceWatch{h: d.host, log: d.log, every: o.SpaceCheck})
	if err := d.wire(); err != nil {
		d.host.Close()
		d.jobs.Close()
		return nil, err
	}
	return d, nil
}

// wire builds the NBD and API servers on freshly bound listeners.
func (d *Daemon) wire() error {
	lns, err := nbdListen(d.opts)
	if err != nil {
		return err
	}
	tokens := api.OpenTokens(d.opts.Datastore)
	exports := exportConfig(lns, d.opts)
	tickets := api.NewHostTickets(d.host, tokens, exports)
	if d.nbd, err = newNBDServers(d.host, d.opts, tickets, lns, d.log); err != nil {
		closeAll(lns.all())
		return err
	}
	if d.apiLns, err = apiListen(d.opts); err != nil {
		return err
	}
	var urls []string
	for _, l := range d.apiLns {
		if _, unix := l.Addr().(*net.UnixAddr); !unix {
			urls = append(urls, "https://"+l.Addr().String())
		}
	}
	d.api = api.New(d.host, api.Options{Logger: d.log, Tokens: tokens, Exports: exports, Tickets: tickets, Jobs: d.jobs, Points: d.opts.Points,
		ConsoleURLs: urls, Datastore: d.opts.Datastore})
	return nil
}

// Register adds a service, started by Serve after the listeners and
// stopped first, while the API and NBD still serve. Call it before Serve.
func (d *Daemon) Register(s Service) { d.services = append(d.services, s) }

// API is the daemon's control API server, on which services hang their
// routes (Route) and metrics (Registry) before Serve.
func (d *Daemon) API() *api.Server { return d.api }

// Host is the daemon's engine (for services and tests).
func (d *Daemon) Host() *host.Host { return d.host }

// Jobs is the host's job history, where services record what they run.
func (d *Daemon) Jobs() *jobs.Store { return d.jobs }

// Datastore is the datastore's directory.
func (d *Daemon) Datastore() string { return d.opts.Datastore }

// Logger is the host's logger.
func (d *Daemon) Logger() *slog.Logger { return d.log }

// APIAddrs are the API's listening addresses (a unix socket's path).
func (d *Daemon) APIAddrs() []string { return addrs(d.apiLns) }

// NBDAddrs are NBD's listening addresses, the unix socket first.
func (d *Daemon) NBDAddrs() []string {
	var out []string
	for _, s := range d.nbd {
		out = append(out, addrs(s.Listeners)...)
	}
	return out
}

// Serve serves until ctx ends or a listener fails, then stops gracefully
// (Stop); it returns the first failure, or nil after a clean stop.
func (d *Daemon) Serve(ctx context.Context) error {
	grp, gctx := errgroup.WithContext(ctx)
	ServeNBD(grp, d.log, d.nbd)
	for _, l := range d.apiLns {
		d.log.Info("api listening", "addr", l.Addr().String())
		grp.Go(func() error { return d.api.Serve(l) })
	}
	var started []Service
	var serr error
	for _, s := range d.services {
		if serr = s.Start(gctx, d); serr != nil {
			break
		}
		started = append(started, s)
	}
	if serr == nil {
		<-gctx.Done()
	}
	return errors.Join(serr, d.stop(grp, started))
}

// stop stops the services first (they are clients of the API and NBD:
// a backup canceled by the scheduler still deletes its snapshot and
// releases its lease through them), then drains API requests (they may
// use disks), then NBD connections, then flushes and closes the disks,
// all within the shutdown deadline.
func (d *Daemon) stop(grp *errgroup.Group, services []Service) error {
	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), d.opts.ShutdownTimeout)
	defer cancel()
	var errs []error
	for i := len(services) - 1; i >= 0; i-- {
		errs = append(errs, services[i].Stop(sctx))
	}
	errs = append(errs, d.api.Shutdown(sctx))
	for _, s := range d.nbd {
		errs = append(errs, s.Server.Shutdown(sctx))
	}
	err := errors.Join(append(errs, grp.Wait(), d.jobs.Close(), d.host.Close(), d.lock.Close())...)
	if err == nil {
		d.log.Info("stopped cleanly")
	}
	return err
}

// Close releases a daemon that was never served.
func (d *Daemon) Close() error {
	d.closeListeners()
	return errors.Join(d.jobs.Close(), d.host.Close(), d.lock.Close())
}

func (d *Daemon) closeListeners() {
	closeAll(d.apiLns)
	for _, s := range d.nbd {
		closeAll(s.Listeners)
	}
}

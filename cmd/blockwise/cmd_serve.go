package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/scheduler"
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
	// MaxBackups bounds the policies' backups running at once (0: the
	// default, scheduler.DefaultMaxConcurrent).
	MaxBackups int
	nbdTLS
	log *slog.Logger // nil: text logs on stderr
}

// nbdTLS: STARTTLS for an NBD server (serve, serve-point).
type nbdTLS = daemon.NBDTLS

func addNBDTLSFlags(f *pflag.FlagSet, o *nbdTLS) {
	f.StringVar(&o.TLSCert, "tls-cert", "", "TLS certificate (PEM) for NBD STARTTLS")
	f.StringVar(&o.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.BoolVar(&o.TLSRequired, "tls-required", false, "refuse NBD clients that do not start TLS")
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
	f.IntVar(&serveOpts.MaxBackups, "max-concurrent-backups", scheduler.DefaultMaxConcurrent, "at most this many backups of protection policies run at once on the host")
	addNBDTLSFlags(f, &serveOpts.nbdTLS)
	rootCmd.AddCommand(serveCmd)
}

// runServe runs the host (internal/daemon) on the datastore until ctx
// ends, then stops it gracefully.
func runServe(ctx context.Context, g globalOptions, o serveOptions) error {
	d, err := daemon.New(daemon.Options{Datastore: g.Datastore, APIUnix: o.APIUnix, APITCP: o.APITCP,
		APITLSCert: o.APITLSCert, APITLSKey: o.APITLSKey, NBDUnix: o.NBDUnix, NBDGroup: o.NBDGroup,
		NBDTCP: o.NBDTCP, NBDInsecure: o.NBDInsecure, NBDTLS: o.nbdTLS, Logger: o.log})
	if err != nil {
		return err
	}
	if o.MaxBackups < 0 {
		d.Close()
		return usageErrorf("--max-concurrent-backups %d: want 1 or more (0: the default, %d)", o.MaxBackups, scheduler.DefaultMaxConcurrent)
	}
	sch, err := scheduler.New(scheduler.Options{Datastore: g.Datastore, Jobs: d.Jobs(), Logger: d.Logger(),
		Disks: d.Host().Datastore().List, MaxConcurrent: o.MaxBackups})
	if err != nil {
		d.Close()
		return err
	}
	d.Register(sch)
	d.API().SetPolicies(sch)
	if err := d.API().Registry().Register(sch.Collector()); err != nil {
		d.Close()
		return err
	}
	return d.Serve(ctx)
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

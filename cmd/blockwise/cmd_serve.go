package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/recovery"
	"github.com/blockwise/blockwise/internal/replica"
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
	// MemoryLimitMiB is the runtime's soft memory limit (setMemoryLimit).
	MemoryLimitMiB int64
	// MaxBackups bounds the policies' backups running at once (0: the
	// default, scheduler.DefaultMaxConcurrent).
	MaxBackups int
	// Scratch is where QEMU puts the policies' hypervisor sources'
	// fleecing overlays and NBD sockets.
	Scratch string
	nbdTLS
	// SpaceWarn is the soft threshold of datastore use, in percent.
	SpaceWarn  float64
	SpaceCheck time.Duration
	// HashTree keeps a hash tree per snapshot (docs/format.md T1–T6).
	HashTree bool
	log      *slog.Logger // nil: text logs on stderr
	// Points* name the repository whose restore points the API serves
	// files of (GET /v1/points...).
	PointsRepo, PointsPasswordFile, PointsKeyFile string
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
		if serveOpts.SpaceWarn <= 0 { // 0 means the default only to callers other than the flag
			return usageErrorf("serve: --space-warn %v: want a percentage in (0, 100]", serveOpts.SpaceWarn)
		}
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
	f.Int64Var(&serveOpts.MemoryLimitMiB, "memory-limit", 384, "soft limit of the host's Go memory in MiB: the garbage collector works harder near it (GOMEMLIMIT overrides; 0: none). NBD requests in flight are bounded apart from it (8 MiB a connection, 192 MiB in all)")
	f.StringVar(&serveOpts.Scratch, "scratch-dir", "", "directory for QEMU's temporary fleecing overlays and NBD sockets when policies back up QEMU or libvirt sources (default the system's temp dir); QEMU must be able to write it")
	f.IntVar(&serveOpts.MaxBackups, "max-concurrent-backups", scheduler.DefaultMaxConcurrent, "at most this many backups of protection policies run at once on the host")
	addNBDTLSFlags(f, &serveOpts.nbdTLS)
	f.Float64Var(&serveOpts.SpaceWarn, "space-warn", 100*host.DefaultSpaceWarn,
		"warn (API, /metrics, log) when the datastore's file system is this many percent full")
	f.BoolVar(&serveOpts.HashTree, "hashtree", true, "keep a hash tree per snapshot and answer its root (--hashtree=false: none; roots answer tree-unavailable)")
	f.DurationVar(&serveOpts.SpaceCheck, "space-check", daemon.DefaultSpaceCheck, "how often the log is told about datastore space")
	f.StringVar(&serveOpts.PointsRepo, "points-repo", "", "serve the files of this repository's restore points over the API (GET /v1/points/{point}/files); opened for each request")
	f.StringVar(&serveOpts.PointsPasswordFile, "points-password-file", "", "with --points-repo: the file holding its password (else env BLOCKWISE_PASSWORD)")
	f.StringVar(&serveOpts.PointsKeyFile, "points-key-file", "", "with --points-repo: a key file instead of a password")
	rootCmd.AddCommand(serveCmd)
}

// runServe runs the host (internal/daemon) on the datastore until ctx
// ends, then stops it gracefully.
func runServe(ctx context.Context, g globalOptions, o serveOptions) error {
	if o.SpaceWarn == 0 {
		o.SpaceWarn = 100 * host.DefaultSpaceWarn
	}
	if !(o.SpaceWarn > 0 && o.SpaceWarn <= 100) {
		return usageErrorf("serve: --space-warn %v: want a percentage in (0, 100]", o.SpaceWarn)
	}
	setMemoryLimit(o.MemoryLimitMiB)
	// The host's services reach it through its API socket, which lives in
	// the datastore: a relative datastore would give a relative socket
	// path, which they cannot tell from a TCP address.
	ds, err := filepath.Abs(g.Datastore)
	if err != nil {
		return err
	}
	g.Datastore = ds
	d, err := daemon.New(daemon.Options{Datastore: g.Datastore, APIUnix: o.APIUnix, APITCP: o.APITCP,
		APITLSCert: o.APITLSCert, APITLSKey: o.APITLSKey, NBDUnix: o.NBDUnix, NBDGroup: o.NBDGroup,
		NBDTCP: o.NBDTCP, NBDInsecure: o.NBDInsecure, NBDTLS: o.nbdTLS, Logger: o.log, Points: o.points(),
		SpaceWarn: o.SpaceWarn / 100, SpaceCheck: o.SpaceCheck, NoHashTrees: !o.HashTree})
	if err != nil {
		return err
	}
	replica.Register(d, o.log)
	if o.MaxBackups < 0 {
		d.Close()
		return usageErrorf("--max-concurrent-backups %d: want 1 or more (0: the default, %d)", o.MaxBackups, scheduler.DefaultMaxConcurrent)
	}
	sch, err := scheduler.New(scheduler.Options{Datastore: g.Datastore, Jobs: d.Jobs(), Logger: d.Logger(),
		Disks: d.Host().Datastore().List, MaxConcurrent: o.MaxBackups, Scratch: o.Scratch})
	if err != nil {
		d.Close()
		return err
	}
	d.Register(sch)
	d.API().SetPolicies(sch)
	// Recoveries: from a policy's repository (its credentials kept by the
	// host), or from --points-repo; no request carries a password.
	ro := recovery.Options{Datastore: g.Datastore, Jobs: d.Jobs(), Log: d.Logger(), PolicyRepo: sch.Repository}
	if o.PointsRepo != "" {
		ro.OpenRepo = o.pointsRepo().open
	}
	recovery.Register(d, ro)
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

// setMemoryLimit sets the runtime's soft memory limit, unless GOMEMLIMIT
// (which the runtime reads itself) is set: without it the heap may grow
// to twice what is live before a collection, and pooled request buffers
// are only given back by one.
func setMemoryLimit(mib int64) {
	if os.Getenv("GOMEMLIMIT") == "" && mib > 0 {
		debug.SetMemoryLimit(mib << 20)
	}
}

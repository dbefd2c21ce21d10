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
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

type serveOptions struct {
	NBDUnix     string
	NBDTCP      []string
	TLSCert     string
	TLSKey      string
	TLSRequired bool
}

var serveOpts serveOptions

var serveCmd = &cobra.Command{
	Use:   "serve",
	Short: "Run the host: the disk engine and its NBD server",
	Long: `Serve the datastore's disks over NBD. Export DISK is the live disk
(read-write); DISK@SNAPSHOT is a snapshot (read-only) whose changed blocks
are offered as qemu:dirty-bitmap:<change ID> contexts.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runServe(cmd.Context(), globals, serveOpts)
	},
}

func init() {
	f := serveCmd.Flags()
	f.StringVar(&serveOpts.NBDUnix, "nbd-unix", "", "unix socket for NBD (default DATASTORE/nbd.sock; \"none\" disables)")
	f.StringArrayVar(&serveOpts.NBDTCP, "nbd-tcp", []string{"127.0.0.1:10809"}, "TCP address for NBD, repeatable (\"\" disables)")
	f.StringVar(&serveOpts.TLSCert, "tls-cert", "", "TLS certificate (PEM) for NBD STARTTLS")
	f.StringVar(&serveOpts.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.BoolVar(&serveOpts.TLSRequired, "tls-required", false, "refuse NBD clients that do not start TLS")
	rootCmd.AddCommand(serveCmd)
}

func runServe(ctx context.Context, g globalOptions, o serveOptions) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ds, err := disk.OpenDatastore(g.Datastore)
	if err != nil {
		return err
	}
	h := host.New(ds)
	srv, err := newNBDServer(h, o, log)
	if err != nil {
		return err
	}
	lns, err := listeners(g.Datastore, o)
	if err != nil {
		return err
	}
	grp, gctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		log.Info("nbd listening", "addr", l.Addr().String())
		grp.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	<-gctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = errors.Join(srv.Shutdown(sctx), grp.Wait(), h.Close())
	return err
}

func newNBDServer(h *host.Host, o serveOptions, log *slog.Logger) (*nbd.Server, error) {
	opts := nbd.ServerOptions{Logger: log, RequireTLS: o.TLSRequired}
	if o.TLSCert != "" || o.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	} else if o.TLSRequired {
		return nil, errors.New("--tls-required needs --tls-cert and --tls-key")
	}
	return nbd.NewServer(h, opts), nil
}

func listeners(dsDir string, o serveOptions) ([]net.Listener, error) {
	var out []net.Listener
	sock := o.NBDUnix
	if sock == "" {
		sock = filepath.Join(dsDir, "nbd.sock")
	}
	if sock != "none" {
		os.Remove(sock) // a stale socket of a stopped server
		l, err := net.Listen("unix", sock)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	for _, a := range o.NBDTCP {
		if a == "" {
			continue
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, x := range out {
				x.Close()
			}
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

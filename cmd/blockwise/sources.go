package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources/qemu"
	"github.com/blockwise/blockwise/internal/transport"
)

// sourceOptions configure hypervisor sources (qemu+unix://...).
type sourceOptions struct {
	Quiesce        string
	QuiesceTimeout time.Duration
	PreFreeze      string
	PostThaw       string
	Scratch        string
}

func addSourceFlags(f *pflag.FlagSet, o *sourceOptions) {
	f.StringVar(&o.Quiesce, "quiesce", "try", "freeze the guest's file systems (guest agent) while its point-in-time view is taken: off, try (else a crash-consistent point, saying why) or require (else fail)")
	f.DurationVar(&o.QuiesceTimeout, "quiesce-timeout", quiesce.DefaultTimeout, "longest the guest stays frozen: it is thawed at the end of this window whatever happens")
	f.StringVar(&o.PreFreeze, "pre-freeze", "", "host command run (sh -c) before the freeze; a non-zero exit means no freeze (try: crash-consistent, require: fail)")
	f.StringVar(&o.PostThaw, "post-thaw", "", "host command run (sh -c) after the thaw")
	f.StringVar(&o.Scratch, "scratch-dir", "", "directory for QEMU's temporary fleecing overlays and NBD socket (default the system's temp dir); QEMU must be able to write it")
}

func isSourceURI(s string) bool { return qemu.IsURI(s) }

// splitSources separates host disk names from hypervisor source URIs.
func splitSources(args []string) (disks []string, sources []qemu.Options, err error) {
	for _, a := range args {
		if !isSourceURI(a) {
			disks = append(disks, a)
			continue
		}
		o, err := qemu.ParseURI(a)
		if err != nil {
			return nil, nil, &usageError{err}
		}
		sources = append(sources, o)
	}
	return disks, sources, nil
}

// backupSource backs up every chosen drive of one VM: the views of all
// drives are taken together (one freeze), then each is read in turn.
func backupSource(ctx context.Context, g globalOptions, o backupOptions, r *repo.Repository, so qemu.Options, out, errOut io.Writer) ([]backupOutcome, error) {
	pol, err := quiesce.ParsePolicy(o.Quiesce)
	if err != nil {
		return nil, &usageError{err}
	}
	so.Quiesce = quiesce.Options{Policy: pol, Timeout: o.QuiesceTimeout, PreFreeze: o.PreFreeze, PostThaw: o.PostThaw}
	so.Scratch = o.Scratch
	so.Tag = r.Config().ID[:min(8, len(r.Config().ID))]
	src, err := qemu.Open(ctx, so)
	if err != nil {
		return nil, err
	}
	var outs []backupOutcome
	var errs []error
	for _, disk := range src.Disks() {
		bar := newProgress(errOut, disk)
		res, err := backup.Run(ctx, backup.Options{Disk: disk, Host: src, Repo: r, Open: src.OpenView,
			Workers: o.Workers, Full: o.Full, Progress: bar.update})
		bar.finish()
		outs = append(outs, backupOutcome{disk: disk, res: res, at: time.Now()})
		if err == nil {
			err = printBackup(g, disk, res, transport.Report{Mode: "qemu-nbd", Detail: "QEMU's NBD server, fleecing view"}, r.OpenTimes(), out)
		}
		if errs = append(errs, err); err != nil && ctx.Err() != nil {
			break
		}
	}
	// Views not read (a failed drive, a cancelled run) go too.
	return outs, errors.Join(append(errs, src.Close())...)
}

package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources/libvirt"
	"github.com/blockwise/blockwise/internal/sources/qemu"
	"github.com/blockwise/blockwise/internal/transport"
)

// sourceOptions configure hypervisor sources (qemu+unix://...) and the
// quiescing of host disks (--agent).
type sourceOptions struct {
	Quiesce        string
	QuiesceTimeout time.Duration
	PreFreeze      string
	PostThaw       string
	Scratch        string
	Agent          string
}

func addSourceFlags(f *pflag.FlagSet, o *sourceOptions) {
	f.StringVar(&o.Quiesce, "quiesce", "try", "freeze the guest's file systems (guest agent) while its point-in-time view is taken: off, try (else a crash-consistent point, saying why) or require (else fail)")
	f.DurationVar(&o.QuiesceTimeout, "quiesce-timeout", quiesce.DefaultTimeout, "longest the guest stays frozen: it is thawed at the end of this window whatever happens")
	f.StringVar(&o.PreFreeze, "pre-freeze", "", "host command run (sh -c) before the freeze; a non-zero exit means no freeze (try: crash-consistent, require: fail)")
	f.StringVar(&o.PostThaw, "post-thaw", "", "host command run (sh -c) after the thaw")
	f.StringVar(&o.Agent, "agent", "", "host disks: the guest agent socket of the VM using the disk, to quiesce it around the snapshot (--quiesce applies); overrides the disk's own (`disk set NAME --agent`); QEMU and libvirt sources take theirs from the URI")
	f.StringVar(&o.Scratch, "scratch-dir", "", "directory for QEMU's temporary fleecing overlays and NBD socket (default the system's temp dir); QEMU must be able to write it")
}

func isSourceURI(s string) bool { return qemu.IsURI(s) || libvirt.IsURI(s) }

// vmSource is a hypervisor source: a backup.Host over a VM's drives.
type vmSource interface {
	backup.Host
	Disks() []string
	OpenView(ctx context.Context, disk, snap string) (backup.Source, error)
	Close() error
}

// splitSources separates host disk names from hypervisor source URIs
// (checked here, opened later).
func splitSources(args []string) (disks, sources []string, err error) {
	for _, a := range args {
		switch {
		case qemu.IsURI(a):
			_, err = qemu.ParseURI(a)
		case libvirt.IsURI(a):
			_, err = libvirt.ParseURI(a)
		default:
			disks = append(disks, a)
			continue
		}
		if err != nil {
			return nil, nil, &usageError{err}
		}
		sources = append(sources, a)
	}
	return disks, sources, nil
}

// hostQuiesce is the quiescing of a host disk's backup through agent:
// --agent, else the disk's own agent property (nil without either).
func hostQuiesce(o backupOptions, agent string) (*quiesce.Options, error) {
	if o.Agent != "" {
		agent = o.Agent
	}
	if agent == "" {
		return nil, nil
	}
	pol, err := quiesce.ParsePolicy(o.Quiesce)
	if err != nil {
		return nil, &usageError{err}
	}
	return &quiesce.Options{Policy: pol, Timeout: o.QuiesceTimeout, PreFreeze: o.PreFreeze, PostThaw: o.PostThaw,
		Connect: func(ctx context.Context) (quiesce.Freezer, error) { return quiesce.DialAgent(ctx, agent) }}, nil
}

// diskQuiesce is hostQuiesce for one host disk, its agent property read
// from the host unless --agent overrides it.
func diskQuiesce(ctx context.Context, o backupOptions, c *client.Client, name string) (*quiesce.Options, error) {
	if o.Agent != "" {
		return hostQuiesce(o, "")
	}
	d, err := c.Disk(ctx, name)
	if err != nil {
		return nil, err
	}
	return hostQuiesce(o, d.Agent)
}

// openSource opens a source URI with the backup's quiescing and scratch
// options, its bitmaps or checkpoints tagged with the repository.
func openSource(ctx context.Context, o backupOptions, r *repo.Repository, uri string) (vmSource, error) {
	pol, err := quiesce.ParsePolicy(o.Quiesce)
	if err != nil {
		return nil, &usageError{err}
	}
	q := quiesce.Options{Policy: pol, Timeout: o.QuiesceTimeout, PreFreeze: o.PreFreeze, PostThaw: o.PostThaw}
	tag := r.Config().ID[:min(8, len(r.Config().ID))]
	if libvirt.IsURI(uri) {
		lo, err := libvirt.ParseURI(uri)
		if err != nil {
			return nil, &usageError{err}
		}
		lo.Quiesce, lo.Scratch, lo.Tag = q, o.Scratch, tag
		return libvirt.Open(ctx, lo)
	}
	so, err := qemu.ParseURI(uri)
	if err != nil {
		return nil, &usageError{err}
	}
	so.Quiesce, so.Scratch, so.Tag = q, o.Scratch, tag
	return qemu.Open(ctx, so)
}

// backupSource backs up every chosen drive of one VM: the views of all
// drives are taken together (one freeze), then each is read in turn.
func backupSource(ctx context.Context, g globalOptions, o backupOptions, r *repo.Repository, uri string, out, errOut io.Writer) ([]backupOutcome, error) {
	src, err := openSource(ctx, o, r, uri)
	if err != nil {
		return nil, err
	}
	var outs []backupOutcome
	var errs []error
	for _, disk := range src.Disks() {
		bar := newProgress(errOut, disk)
		res, err := backup.Run(ctx, backup.Options{Disk: disk, Host: src, Repo: r, Open: src.OpenView,
			Workers: o.Workers, Full: o.Full, NoProve: o.NoProve, Progress: bar.update})
		bar.finish()
		outs = append(outs, backupOutcome{disk: disk, res: res, at: time.Now()})
		if err == nil {
			err = printBackup(g, disk, res, transport.Report{Mode: "qemu-nbd", Detail: "QEMU's NBD export of a point-in-time view"}, r.OpenTimes(), out)
		}
		if errs = append(errs, err); err != nil && ctx.Err() != nil {
			break
		}
	}
	// Views not read (a failed drive, a cancelled run) go too.
	return outs, errors.Join(append(errs, src.Close())...)
}

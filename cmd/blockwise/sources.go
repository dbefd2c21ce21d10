package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources"
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
	addQuiesceFlags(f, o)
	f.StringVar(&o.Agent, "agent", "", "host disks: the guest agent socket of the VM using the disk, to quiesce it around the snapshot (--quiesce applies); overrides the disk's own (`disk set NAME --agent`); QEMU and libvirt sources take theirs from the URI")
	f.StringVar(&o.Scratch, "scratch-dir", "", "directory for QEMU's temporary fleecing overlays and NBD socket (default the system's temp dir); QEMU must be able to write it")
}

// addQuiesceFlags are the quiescing flags, shared by backup and policy.
func addQuiesceFlags(f *pflag.FlagSet, o *sourceOptions) {
	f.StringVar(&o.Quiesce, "quiesce", "try", "freeze the guest's file systems (guest agent) while its point-in-time view is taken: off, try (else a crash-consistent point, saying why) or require (else fail)")
	f.DurationVar(&o.QuiesceTimeout, "quiesce-timeout", quiesce.DefaultTimeout, "longest the guest stays frozen: it is thawed at the end of this window whatever happens")
	f.StringVar(&o.PreFreeze, "pre-freeze", "", "host command run (sh -c) before the freeze; a non-zero exit means no freeze (try: crash-consistent, require: fail)")
	f.StringVar(&o.PostThaw, "post-thaw", "", "host command run (sh -c) after the thaw")
}

func (o sourceOptions) options(r *repo.Repository) sources.Options {
	so := sources.Options{Quiesce: o.Quiesce, QuiesceTimeout: o.QuiesceTimeout, PreFreeze: o.PreFreeze, PostThaw: o.PostThaw, Scratch: o.Scratch}
	if r != nil {
		so.Tag = sources.Tag(r)
	}
	return so
}

// backupSource backs up every chosen drive of one VM: the views of all
// drives are taken together (one freeze), then each is read in turn.
func backupSource(ctx context.Context, g globalOptions, o backupOptions, r *repo.Repository, uri string, out, errOut io.Writer) ([]backupOutcome, error) {
	src, err := sources.Open(ctx, uri, o.sourceOptions.options(r))
	if err != nil {
		return nil, err
	}
	printRecovered(errOut, src.Recovered())
	var outs []backupOutcome
	var bar *progress
	err = sources.Backup(ctx, src, func(disk string) backup.Options {
		bar = newProgress(errOut, disk)
		return backup.Options{Repo: r, Workers: o.Workers, Full: o.Full, NoProve: o.NoProve, Progress: bar.update}
	}, func(disk string, res *backup.Result, err error) error {
		bar.finish()
		outs = append(outs, backupOutcome{disk: disk, res: res, at: time.Now()})
		if err == nil {
			err = printBackup(g, disk, res, sources.Report(), r.OpenTimes(), out)
		}
		return err
	})
	return outs, err
}

// printRecovered says what opening a VM did about restores into it that
// a SIGKILL interrupted.
func printRecovered(w io.Writer, msgs []string) {
	for _, m := range msgs {
		fmt.Fprintf(w, "blockwise: %s\n", m)
	}
}

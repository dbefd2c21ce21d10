package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources/libvirt"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

// restoredVM is the --json summary of a restore into a VM's drive.
type restoredVM struct {
	Point        string   `json:"point"`
	Drive        string   `json:"drive"`
	Partial      bool     `json:"partial"`
	ChangedBytes int64    `json:"changedBytes"`
	Reason       string   `json:"reason,omitempty"`
	BytesWritten int64    `json:"bytesWritten"`
	ZeroSlots    int64    `json:"zeroSlots"`
	Verified     int64    `json:"verifiedChunks"`
	RootVerified bool     `json:"rootVerified"`
	Resumed      bool     `json:"resumed"`
	ResetBitmaps []string `json:"resetBitmaps"`
	// Recovered: restores into the VM a SIGKILL interrupted, finished or
	// undone before this one.
	Recovered []string `json:"recovered,omitempty"`
}

// intoVM is a VM source that restores into its drives.
type intoVM interface {
	RestoreInto(ctx context.Context, o qemu.IntoOptions) (*qemu.IntoResult, error)
	Recovered() []string
	Close() error
}

// openInto opens --to-uri's VM, its bitmaps or checkpoints tagged with
// the repository as a backup's are.
func openInto(ctx context.Context, o restoreOptions, r *repo.Repository) (intoVM, error) {
	tag := r.Config().ID[:min(8, len(r.Config().ID))]
	if libvirt.IsURI(o.ToURI) {
		lo, err := libvirt.ParseURI(o.ToURI)
		if err != nil {
			return nil, &usageError{err}
		}
		if o.Drive != "" {
			lo.Disks = []string{o.Drive}
		}
		if len(lo.Disks) > 1 {
			return nil, usageErrorf("--to-uri %s: name one disk (&disk=TARGET or --drive)", o.ToURI)
		}
		lo.Scratch, lo.Tag = o.Scratch, tag
		return libvirt.Open(ctx, lo)
	}
	so, err := qemu.ParseURI(o.ToURI)
	if err != nil {
		return nil, &usageError{err}
	}
	if o.Drive != "" {
		so.Drives = []string{o.Drive}
	}
	so.Scratch, so.Tag = o.Scratch, tag
	return qemu.Open(ctx, so)
}

// runRestoreVM restores a point into a running VM's drive through its QMP
// socket (qemu.Source.RestoreInto).
func runRestoreVM(ctx context.Context, g globalOptions, o restoreOptions, r *repo.Repository, m *repo.Manifest, out io.Writer) error {
	src, err := openInto(ctx, o, r)
	if err != nil {
		return err
	}
	defer src.Close()
	printRecovered(os.Stderr, src.Recovered())
	bar := newProgress(os.Stderr, "restore "+m.ID.Short())
	res, err := src.RestoreInto(ctx, qemu.IntoOptions{Repo: r, Manifest: m, Workers: o.Workers, Progress: bar.update,
		Hook: killAtStep(os.Getenv(killAtStepEnv))})
	bar.finish()
	if err != nil {
		return err
	}
	sum := restoredVM{Point: m.ID.String(), Drive: res.Drive, Partial: res.Partial, ChangedBytes: res.ChangedBytes,
		Reason: res.Reason, BytesWritten: res.BytesWritten, ZeroSlots: res.ZeroSlots, Verified: res.Verified,
		RootVerified: res.RootVerified, Resumed: res.WasRunning, ResetBitmaps: res.Reset, Recovered: src.Recovered()}
	if g.JSON {
		return printJSON(out, sum)
	}
	what := fmt.Sprintf("the whole point (%s)", res.Reason)
	if res.Partial {
		what = fmt.Sprintf("only the %d bytes its bitmaps marked changed since the point", res.ChangedBytes)
	}
	fmt.Fprintf(out, "restored %s into %s of the paused VM, writing %s: ", m.ID.Short(), res.Drive, what)
	printRestored(out, res.RestoreResult, true)
	state := "left paused (it was not running)"
	if res.WasRunning {
		state = "resumed"
	}
	root := "the point has no root: only the written chunks were compared"
	if res.RootVerified {
		root = "the whole drive, read back, has the point's root"
	}
	fmt.Fprintf(out, "%s; VM %s; blockwise's bitmaps reset (%s): the next backup of the drive reads it whole\n",
		root, state, strings.Join(res.Reset, ", "))
	return nil
}

// killAtStepEnv names a step of a restore into a VM (qemu.IntoOptions.Hook)
// at which the process SIGKILLs itself: the tests of the recovery.
const killAtStepEnv = "BLOCKWISE_TEST_KILL_RESTORE_AT"

func killAtStep(at string) func(string) {
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			fmt.Fprintf(os.Stderr, "blockwise: %s=%s: killed\n", killAtStepEnv, at)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

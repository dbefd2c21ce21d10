package sources

import (
	"context"
	"errors"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/transport"
)

// Report is how a VM's drives are read, as backup summaries tell it.
func Report() transport.Report {
	return transport.Report{Mode: "qemu-nbd", Detail: "QEMU's NBD export of a point-in-time view"}
}

// Backup backs up every drive of vm in turn: each with the options opts
// gives it (Disk, Host and Open are set here), then done is told how it
// went; done's error counts as the drive's. A failed drive does not stop
// the others; a cancelled ctx does. vm is closed at the end, so views
// not read (a failed drive, a cancelled run) go too.
func Backup(ctx context.Context, vm VM, opts func(disk string) backup.Options,
	done func(disk string, res *backup.Result, err error) error) error {
	var errs []error
	for _, disk := range vm.Disks() {
		o := opts(disk)
		o.Disk, o.Host, o.Open = disk, vm, vm.OpenView
		res, err := backup.Run(ctx, o)
		if errs = append(errs, done(disk, res, err)); ctx.Err() != nil {
			break
		}
	}
	return errors.Join(append(errs, vm.Close())...)
}

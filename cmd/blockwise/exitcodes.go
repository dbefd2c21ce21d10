package main

import (
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/overlay"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/recovery"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources/libvirt"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

// Exit codes, documented in README.md.
const (
	exitOK           = 0
	exitFailure      = 1  // any other error (a read-only repository that needs --no-lock too)
	exitUsage        = 2  // bad flags or arguments
	exitNotFound     = 3  // disk, snapshot or export not found
	exitInvalid      = 4  // change ID invalid: a full backup (or a whole restore instead of a rollback) is needed
	exitBusy         = 5  // disk locked by another process or operation in progress
	exitCorrupt      = 6  // on-disk data failed validation (a damaged key file or key slot too), the repository's index is incomplete, or a restore point's root is not the host's (backup) or the restored image's (restore --verify)
	exitUnauthorized = 7  // the host refused the token, or a wrong repository password
	exitCheckFailed  = 8  // repo check found errors
	exitNoSpace      = 9  // the datastore is full: free space and retry (nothing was changed)
	exitNotSupported = 10 // the host cannot offload the request: fall back to moving the data (nothing was changed)
)

// usageError marks bad flags or arguments (exit 2). It is the one usage
// error: commands return it (usageErrorf), and cobra's own flag,
// argument and subcommand errors are turned into it where cobra makes
// them (cobraerrors.go), so nothing is classified by its text.
type usageError struct{ err error }

// Error implements error.
func (e *usageError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error, for errors.Is and errors.As.
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	return classify(err)
}

func classify(err error) int {
	var ue *usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, repo.ErrInvalid), errors.Is(err, client.ErrInvalidRequest), errors.Is(err, client.ErrOutOfRange),
		errors.Is(err, backup.ErrNotThisDisk), errors.Is(err, backup.ErrAmbiguousPoint), errors.Is(err, daemon.ErrConfig),
		errors.Is(err, qemu.ErrURI), errors.Is(err, qemu.ErrSize), errors.Is(err, quiesce.ErrPolicy), errors.Is(err, libvirt.ErrURI),
		errors.Is(err, fileres.ErrEscape), errors.Is(err, fileres.ErrNotDir),
		errors.Is(err, overlay.ErrMismatch), errors.Is(err, disk.ErrInvalid), errors.Is(err, disk.ErrTooLarge),
		errors.Is(err, client.ErrNotALease), errors.Is(err, recovery.ErrOverlayTaken):
		return exitUsage
	case errors.Is(err, repo.ErrIncomplete): // before not found: a blob missing from the index is damage
		return exitCorrupt
	case errors.Is(err, client.ErrNotFound), errors.Is(err, disk.ErrNotFound), errors.Is(err, api.ErrTokenNotFound), errors.Is(err, repo.ErrNotFound),
		errors.Is(err, qemu.ErrNoDrive), errors.Is(err, qemu.ErrNoVM), errors.Is(err, libvirt.ErrNoDisk), errors.Is(err, fileres.ErrNotFound),
		errors.Is(err, backup.ErrNoRecovery):
		return exitNotFound
	case errors.Is(err, client.ErrChangeIDInvalid), errors.Is(err, disk.ErrChangeIDInvalid), errors.Is(err, backup.ErrChangeIDInvalid):
		return exitInvalid
	case errors.Is(err, client.ErrBusy), errors.Is(err, client.ErrExists), errors.Is(err, disk.ErrBusy), errors.Is(err, repo.ErrLocked),
		errors.Is(err, client.ErrLeaseHeld), errors.Is(err, client.ErrTooManyTickets), errors.Is(err, backup.ErrLeaseHeld), errors.Is(err, backup.ErrLeaseLost),
		errors.Is(err, qemu.ErrNBDServer), errors.Is(err, fileres.ErrMountBusy), errors.Is(err, overlay.ErrInUse),
		errors.Is(err, client.ErrReplicationState), errors.Is(err, client.ErrSplitBrain),
		errors.Is(err, client.ErrMiscompare), errors.Is(err, client.ErrSectorLeaseHeld), errors.Is(err, client.ErrSectorLeaseLost):
		return exitBusy
	case errors.Is(err, client.ErrCorrupt), errors.Is(err, disk.ErrCorrupt), errors.Is(err, repo.ErrCorrupt), errors.Is(err, fileres.ErrDamaged),
		errors.Is(err, overlay.ErrCorrupt), errors.Is(err, backup.ErrRootMismatch):
		return exitCorrupt
	case errors.Is(err, client.ErrUnauthorized), errors.Is(err, repo.ErrWrongPassword):
		return exitUnauthorized
	case errors.Is(err, errCheckFailed):
		return exitCheckFailed
	case errors.Is(err, client.ErrNoSpace), errors.Is(err, disk.ErrNoSpace), errors.Is(err, overlay.ErrNoSpace):
		return exitNoSpace
	case errors.Is(err, client.ErrNotSupported), errors.Is(err, disk.ErrNotSupported):
		return exitNotSupported
	}
	return exitFailure
}

package fileres

import (
	"errors"
	"fmt"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrNotFound: no such path in the point (or no such volume).
	ErrNotFound = errors.New("fileres: no such file or directory")
	// ErrNotDir: a path component is not a directory.
	ErrNotDir = errors.New("fileres: not a directory")
	// ErrEscape: a path leaves its filesystem ("..") or a name read
	// from the image cannot be a file name on the host ("/", NUL).
	ErrEscape = errors.New("fileres: path outside the filesystem")
	// ErrUnsupported: a partition table, volume manager or filesystem
	// (or a feature of one) this package does not read.
	ErrUnsupported = errors.New("fileres: unsupported")
	// ErrDamaged: the image's bytes contradict their format (a bad
	// magic, a pointer out of range, a loop).
	ErrDamaged = errors.New("fileres: damaged")
	// ErrMountBusy: the mount point is not an empty, unmounted directory.
	ErrMountBusy = errors.New("fileres: mount point in use")
)

// VolumeError (F4) names the volume (partition, logical volume) whose
// filesystem could not be read, and what was found there.
type VolumeError struct {
	Volume string // e.g. "part2", "part3/vg0-root"
	Found  string // e.g. "xfs", "ext4", "unknown (no filesystem signature)"
	Err    error  // wraps ErrUnsupported or ErrDamaged
}

// Error implements error.
func (e *VolumeError) Error() string {
	return fmt.Sprintf("volume %s (%s): %v", e.Volume, e.Found, e.Err)
}

// Unwrap returns the wrapped error, for errors.Is and errors.As.
func (e *VolumeError) Unwrap() error { return e.Err }

func damaged(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrDamaged)
}

func unsupported(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrUnsupported)
}

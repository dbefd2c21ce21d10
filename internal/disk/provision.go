package disk

import (
	"errors"
	"fmt"

	"github.com/blockwise/blockwise/internal/vfs"
)

// Provision is how a disk's flat layer holds its space.
type Provision string

// Provisioning modes (disk create --provision).
const (
	// ProvisionThin allocates on first write; TRIM and WRITE_ZEROES
	// without NO_HOLE give space back. The default.
	ProvisionThin Provision = "thin"
	// ProvisionLazy reserves the whole disk at creation (fallocate:
	// unwritten extents, which read as zeroes and are zeroed by the file
	// system on first write). TRIM keeps the reservation.
	ProvisionLazy Provision = "lazy-zeroed"
	// ProvisionEager reserves and zeroes the whole disk at creation
	// without writing zeroes through the page cache
	// (FALLOC_FL_WRITE_ZEROES where the kernel and device have it, else
	// reserved as ProvisionLazy: on this project's test machine neither
	// ext4, XFS on a loop device nor tmpfs take it). TRIM keeps it.
	ProvisionEager Provision = "eager-zeroed"
)

// ParseProvision accepts "", thin, lazy-zeroed and eager-zeroed.
func ParseProvision(s string) (Provision, error) {
	switch p := Provision(s); p {
	case "", ProvisionThin:
		return ProvisionThin, nil
	case ProvisionLazy, ProvisionEager:
		return p, nil
	}
	return "", fmt.Errorf("%w: provision %q (want thin, lazy-zeroed or eager-zeroed)", ErrInvalid, s)
}

// stored is the disk.meta value: "" for thin.
func (p Provision) stored() Provision {
	if p == ProvisionThin {
		return ""
	}
	return p
}

// thick reports whether the flat layer keeps its space reserved. Caller
// holds the barrier (shared is enough).
func (d *Disk) thick() bool { return d.meta.Provision != "" }

// reserve allocates [off, off+n) of a thick flat layer f; it reports
// whether the range was zeroed as written extents.
//
// Invariant 11 (docs/format.md).
func reserve(f vfs.File, p Provision, off, n int64) (bool, error) {
	if p.stored() == "" || n <= 0 {
		return false, nil
	}
	written, err := vfs.Reserve(f, off, n, p == ProvisionEager)
	if errors.Is(err, errors.ErrUnsupported) {
		return false, fmt.Errorf("%w: %s provisioning needs fallocate: %w", ErrNotSupported, p, err)
	}
	return written, err
}

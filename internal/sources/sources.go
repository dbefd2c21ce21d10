package sources

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/sources/libvirt"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

// ErrPassword: a source URI with a password in it (refused: it would be
// stored with a policy and echoed; ssh takes keyfile=).
var ErrPassword = errors.New("a source URI may not carry a password (ssh authenticates with keyfile=)")

// Options of Open: the quiescing of the VM's views and where QEMU puts
// its temporary files.
type Options struct {
	// Quiesce: off, try (else a crash-consistent point, saying why) or
	// require (else fail); "" is try.
	Quiesce        string
	QuiesceTimeout time.Duration // the freeze window; quiesce.DefaultTimeout if zero
	// PreFreeze and PostThaw are host commands run by sh -c.
	PreFreeze, PostThaw string
	// Scratch holds QEMU's fleecing overlays and NBD socket (the system's
	// temp dir if empty); QEMU must be able to write it.
	Scratch string
	// Tag names the owner of the bitmaps or checkpoints (Tag(repo)).
	Tag string
}

// quiesceOptions are o's quiescing without a guest connection (the
// source's own, from its URI, or the caller's for host disks).
func (o Options) quiesceOptions() (quiesce.Options, error) {
	pol, err := quiesce.ParsePolicy(o.Quiesce)
	if err != nil {
		return quiesce.Options{}, err
	}
	return quiesce.Options{Policy: pol, Timeout: o.QuiesceTimeout, PreFreeze: o.PreFreeze, PostThaw: o.PostThaw}, nil
}

// Tag is the owner tag of repository r's bitmaps and checkpoints.
func Tag(r *repo.Repository) string {
	id := r.Config().ID
	return id[:min(8, len(id))]
}

// VM is an opened source: a backup.Host over a VM's drives.
type VM interface {
	backup.Host
	// Disks are the repository disk names of the chosen drives.
	Disks() []string
	// OpenView reads a drive's point-in-time view (backup.Options.Open).
	OpenView(ctx context.Context, disk, snap string) (backup.Source, error)
	// Recovered says what opening did about restores into the VM that
	// a SIGKILL interrupted (finished or undone, VM resumed or not).
	Recovered() []string
	// Close removes the views not read yet and disconnects.
	Close() error
}

// IsURI reports whether s names a hypervisor source rather than a host
// disk.
func IsURI(s string) bool { return qemu.IsURI(s) || libvirt.IsURI(s) }

// Check validates a source URI without connecting. Its errors wrap
// qemu.ErrURI, libvirt.ErrURI or ErrPassword and show the URI redacted.
func Check(uri string) error {
	if u, err := url.Parse(uri); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return fmt.Errorf("%w: %s", ErrPassword, Redact(uri))
		}
	}
	var err error
	switch {
	case qemu.IsURI(uri):
		_, err = qemu.ParseURI(uri)
	case libvirt.IsURI(uri):
		_, err = libvirt.ParseURI(uri)
	default:
		return fmt.Errorf("%w: %q: not a qemu+unix://, libvirt:// or qemu+ssh:// URI", qemu.ErrURI, uri)
	}
	return redacted(uri, err)
}

// Split separates host disk names from source URIs (checked here,
// opened later), in their order.
func Split(args []string) (disks, uris []string, err error) {
	for _, a := range args {
		if !IsURI(a) {
			disks = append(disks, a)
			continue
		}
		if err := Check(a); err != nil {
			return nil, nil, err
		}
		uris = append(uris, a)
	}
	return disks, uris, nil
}

// Open connects to the source uri with o.
func Open(ctx context.Context, uri string, o Options) (VM, error) {
	if err := Check(uri); err != nil {
		return nil, err
	}
	q, err := o.quiesceOptions()
	if err != nil {
		return nil, err
	}
	if libvirt.IsURI(uri) {
		lo, err := libvirt.ParseURI(uri)
		if err != nil {
			return nil, redacted(uri, err)
		}
		lo.Quiesce, lo.Scratch, lo.Tag = q, o.Scratch, o.Tag
		src, err := libvirt.Open(ctx, lo)
		return vmOrNil(src, redacted(uri, err))
	}
	so, err := qemu.ParseURI(uri)
	if err != nil {
		return nil, redacted(uri, err)
	}
	so.Quiesce, so.Scratch, so.Tag = q, o.Scratch, o.Tag
	src, err := qemu.Open(ctx, so)
	return vmOrNil(src, redacted(uri, err))
}

// vmOrNil keeps a typed nil source out of the VM interface.
func vmOrNil[S VM](src S, err error) (VM, error) {
	if err != nil {
		return nil, err
	}
	return src, nil
}

// Redact is uri with any password in its user information replaced by
// "xxxxx" (url.URL.Redacted); a string that does not parse is returned
// whole only when it has no '@' (where a password could hide).
func Redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		if strings.Contains(uri, "@") {
			return "(unparsable source URI)"
		}
		return uri
	}
	if u.User == nil {
		return uri
	}
	if _, ok := u.User.Password(); !ok {
		return uri
	}
	return u.Redacted()
}

// redactedError is err with the source URI in its text redacted; errors.Is
// still sees what err wraps.
type redactedError struct {
	msg string
	err error
}

// Error is the message with the URI redacted.
func (e *redactedError) Error() string { return e.msg }

// Unwrap is the error redacted, for errors.Is and errors.As.
func (e *redactedError) Unwrap() error { return e.err }

func redacted(uri string, err error) error {
	if err == nil {
		return nil
	}
	r := Redact(uri)
	if r == uri {
		return err
	}
	quoted := fmt.Sprintf("%q", uri) // the parsers quote the URI
	msg := strings.ReplaceAll(err.Error(), quoted[1:len(quoted)-1], r)
	return &redactedError{msg: strings.ReplaceAll(msg, uri, r), err: err}
}

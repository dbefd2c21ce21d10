package disk

import (
	"fmt"
	"path/filepath"
	"strings"
)

// maxAgentPath is the longest unix socket path Linux takes (sun_path is
// 108 bytes with the terminating NUL).
const maxAgentPath = 107

// ValidAgent checks a guest agent socket path: absolute, clean, short
// enough to dial, without control characters.
func ValidAgent(p string) error {
	switch {
	case !filepath.IsAbs(p) || filepath.Clean(p) != p:
		return fmt.Errorf("%w: agent socket %q: not an absolute clean path", ErrInvalid, p)
	case len(p) > maxAgentPath:
		return fmt.Errorf("%w: agent socket %q: longer than %d bytes", ErrInvalid, p, maxAgentPath)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: agent socket %q: control characters", ErrInvalid, p)
	}
	return nil
}

// SetAgent records the guest agent socket of the VM that uses the disk
// ("" forgets it), durably in disk.meta: backups of the disk quiesce the
// guest through it.
func (d *Disk) SetAgent(path string) error {
	if path != "" {
		if err := ValidAgent(path); err != nil {
			return err
		}
	}
	d.barrier.Lock()
	defer d.barrier.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.meta.Agent == path {
		return nil
	}
	m := d.meta.clone()
	m.Agent = path
	return d.checkpoint(m, d.chain, false)
}

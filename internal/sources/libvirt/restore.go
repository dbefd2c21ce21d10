package libvirt

import (
	"context"
	"encoding/json"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/blockwise/blockwise/internal/qmp"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

// RestoreInto writes a restore point into one of the running domain's
// disks (the only chosen one, or the point's own) the way the QMP source
// does (qemu.Source.RestoreInto), its QMP commands passed through libvirt
// (virDomainQemuMonitorCommand, which marks the domain tainted) and the
// domain paused and resumed by libvirt (virDomainSuspend/Resume). The
// whole point is written: the disk's bitmaps are libvirt's checkpoints.
// Then blockwise's checkpoints are deleted, so the next backup reads the
// disk whole and says why.
func (s *Source) RestoreInto(ctx context.Context, o qemu.IntoOptions) (*qemu.IntoResult, error) {
	if s.o.SSH != nil {
		// QEMU's NBD server would listen on the remote host; the restore
		// does not forward it (backups do).
		return nil, fmt.Errorf("%w: restore into a domain over qemu+ssh:// is not supported: run it on the libvirt host", ErrURI)
	}
	d, err := s.restoreDisk(o.Manifest.Disk)
	if err != nil {
		return nil, err
	}
	if d.alias == "" {
		return nil, fmt.Errorf("%w: domain %s is not running (restore into its image file instead)", ErrNoDisk, s.o.Domain)
	}
	qs, err := qemu.Open(ctx, qemu.Options{Monitor: monitor{s.l, s.dom}, Drives: []string{d.alias}, Name: s.o.Domain,
		Tag: s.o.Tag, Scratch: s.o.Scratch, Control: &qemu.Control{Pause: s.pause, Resume: s.resume,
			Whole: "a libvirt domain: its disk's bitmaps are libvirt's checkpoints"}})
	if err != nil {
		return nil, err
	}
	defer qs.Close()
	res, err := qs.RestoreInto(ctx, o)
	if err != nil {
		return nil, err
	}
	res.Drive = d.name
	if res.Reset, err = s.deleteCheckpoints(); err != nil {
		return res, fmt.Errorf("restored and verified, but deleting blockwise's checkpoints failed (their bitmaps recorded the restore's writes, so an incremental stays right): %w", err)
	}
	return res, nil
}

// restoreDisk is the disk a point goes into.
func (s *Source) restoreDisk(name string) (disk, error) {
	if d, err := s.disk(name); err == nil {
		return d, nil
	}
	if len(s.disks) == 1 {
		return s.disks[0], nil
	}
	return disk{}, fmt.Errorf("%w: domain %s has no disk %s: choose one with &disk=TARGET", ErrNoDisk, s.o.Domain, name)
}

// pause suspends the domain if it runs.
func (s *Source) pause(ctx context.Context) (bool, error) {
	state, _, err := s.l.DomainGetState(s.dom, 0)
	if err != nil {
		return false, err
	}
	switch golibvirt.DomainState(state) {
	case golibvirt.DomainRunning:
		return true, s.l.DomainSuspend(s.dom)
	case golibvirt.DomainPaused:
		return false, nil
	}
	return false, fmt.Errorf("%w: domain %s is in state %d, neither running nor paused", ErrNoDisk, s.o.Domain, state)
}

func (s *Source) resume(ctx context.Context) error { return s.l.DomainResume(s.dom) }

// deleteCheckpoints deletes blockwise's checkpoints, newest first.
func (s *Source) deleteCheckpoints() ([]string, error) {
	cps, err := s.ownedCheckpoints()
	if err != nil {
		return nil, err
	}
	var done []string
	for i := len(cps) - 1; i >= 0; i-- {
		if err := s.l.DomainCheckpointDelete(golibvirt.DomainCheckpoint{Name: cps[i], Dom: s.dom}, 0); err != nil {
			return done, err
		}
		done = append(done, cps[i])
	}
	return done, nil
}

// monitor runs QMP commands through libvirt's monitor passthrough.
type monitor struct {
	l   *golibvirt.Libvirt
	dom golibvirt.Domain
}

// Execute implements qemu.Monitor (the call itself is not cancellable).
func (m monitor) Execute(ctx context.Context, cmd string, args, out any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	reply, err := m.l.QEMUDomainMonitorCommand(m.dom, string(b), 0)
	if err != nil {
		return fmt.Errorf("qmp %s through libvirt: %w", cmd, err)
	}
	var r struct {
		Return json.RawMessage `json:"return"`
		Error  *qmp.Error      `json:"error"`
	}
	if err := json.Unmarshal([]byte(reply), &r); err != nil {
		return fmt.Errorf("%w: qmp %s through libvirt: %v", qmp.ErrProtocol, cmd, err)
	}
	if r.Error != nil {
		r.Error.Command = cmd
		return r.Error
	}
	if out == nil || r.Return == nil {
		return nil
	}
	return json.Unmarshal(r.Return, out)
}

// Close implements qemu.Monitor: the connection is the source's.
func (monitor) Close() error { return nil }

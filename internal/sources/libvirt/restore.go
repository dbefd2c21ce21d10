package libvirt

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

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
// disk whole and says why. Over qemu+ssh:// the private directory is made
// on the libvirt host and QEMU's NBD socket forwarded (sshWorkspace).
func (s *Source) RestoreInto(ctx context.Context, o qemu.IntoOptions) (*qemu.IntoResult, error) {
	d, err := s.restoreDisk(o.Manifest.Disk)
	if err != nil {
		return nil, err
	}
	if d.alias == "" {
		return nil, fmt.Errorf("%w: domain %s is not running (restore into its image file instead)", ErrNoDisk, s.o.Domain)
	}
	qs, err := s.openQEMU(ctx, d.alias)
	if err != nil {
		return nil, err
	}
	defer qs.Close()
	s.recovered = append(s.recovered, qs.Recovered()...)
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

// openQEMU opens the domain's QEMU through libvirt's QMP passthrough
// with the drive alias chosen (every drive if ""), which also recovers
// restores into the domain a SIGKILL interrupted.
func (s *Source) openQEMU(ctx context.Context, alias string) (*qemu.Source, error) {
	var drives []string
	if alias != "" {
		drives = []string{alias}
	}
	qo := qemu.Options{Monitor: monitor{s.l, s.dom}, Drives: drives, Name: s.o.Domain,
		Tag: s.o.Tag, Scratch: s.o.Scratch, StateDir: s.stateDir(), Key: s.stateKey(),
		Control: &qemu.Control{Running: s.running, Pause: s.pause, Resume: s.resume,
			Whole: "a libvirt domain: its disk's bitmaps are libvirt's checkpoints"}}
	if s.o.SSH != nil {
		qo.Workspace = sshWorkspace{d: *s.o.SSH, scratch: s.o.Scratch}
	}
	return qemu.Open(ctx, qo)
}

// stateDir is where restore state files are kept: on this host, so the
// scratch directory only for a local libvirtd.
func (s *Source) stateDir() string {
	if s.o.SSH != nil {
		return os.TempDir()
	}
	return s.o.Scratch
}

// stateKey names the domain in restore state files.
func (s *Source) stateKey() string {
	host := "local"
	if s.o.SSH != nil {
		host = s.o.SSH.target() + ":" + strconv.Itoa(s.o.SSH.Port)
	}
	return "libvirt:" + host + ":" + s.o.Socket + ":" + s.o.Domain
}

// recoverRestores finishes or undoes restores into the running domain
// that a SIGKILL interrupted, when their state files say there are any
// (the QMP passthrough taints the domain: not used otherwise).
func (s *Source) recoverRestores(ctx context.Context) error {
	if !qemu.PendingRestores(s.stateDir(), s.stateKey()) {
		return nil
	}
	qs, err := s.openQEMU(ctx, "")
	if err != nil {
		return err
	}
	s.recovered = append(s.recovered, qs.Recovered()...)
	return qs.Close()
}

// Recovered says what opening the source did about killed restores.
func (s *Source) Recovered() []string { return s.recovered }

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

// running reports whether the domain runs (false: paused).
func (s *Source) running(ctx context.Context) (bool, error) {
	state, _, err := s.l.DomainGetState(s.dom, 0)
	if err != nil {
		return false, err
	}
	switch golibvirt.DomainState(state) {
	case golibvirt.DomainRunning:
		return true, nil
	case golibvirt.DomainPaused:
		return false, nil
	}
	return false, fmt.Errorf("%w: domain %s is in state %d, neither running nor paused", ErrNoDisk, s.o.Domain, state)
}

// pause suspends the domain if it runs.
func (s *Source) pause(ctx context.Context) error {
	running, err := s.running(ctx)
	if err != nil || !running {
		return err
	}
	return s.l.DomainSuspend(s.dom)
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

// sshWorkspace is a restore's private directory on the libvirt host of a
// qemu+ssh:// URI, its NBD socket forwarded here by ssh -L.
type sshWorkspace struct {
	d       sshDialer
	scratch string
}

// MakeDir implements qemu.Workspace.
func (w sshWorkspace) MakeDir(ctx context.Context) (string, error) {
	return w.d.remoteDir(ctx, w.scratch, "blockwise-restore-")
}

// CreateImage implements qemu.Workspace: qemu-img on the libvirt host,
// the image writable by QEMU's user there (the directory is 0777 too).
func (w sshWorkspace) CreateImage(ctx context.Context, path string, size int64) error {
	if _, err := w.d.remoteRun(ctx, fmt.Sprintf("qemu-img create -q -f qcow2 '%s' %d && chmod 666 '%s'", path, size, path)); err != nil {
		return fmt.Errorf("create the restore overlay on %s: %w", w.d.Host, err)
	}
	return nil
}

// Forward implements qemu.Workspace.
func (w sshWorkspace) Forward(ctx context.Context, sock string) (string, func(), error) {
	t, err := w.d.forward(ctx, sock)
	if err != nil {
		return "", nil, fmt.Errorf("forward the restore's NBD socket from %s: %w", w.d.Host, err)
	}
	return t.sock, t.close, nil
}

// RemoveDir implements qemu.Workspace.
func (w sshWorkspace) RemoveDir(dir string) error {
	if dir == "" {
		return nil
	}
	return w.d.removeRemoteDir(dir)
}

package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Remote data path (qemu+ssh://): the backup job's directory (scratch
// files, NBD socket) is made on the libvirt host through ssh, and the NBD
// socket is forwarded to a local one by `ssh -L LOCAL:REMOTE` (OpenSSH's
// unix-socket forwarding; the server needs AllowStreamLocalForwarding,
// its default): the data crosses the same authenticated, encrypted ssh
// transport as the libvirt connection, and QEMU's NBD server stays on a
// unix socket on the remote host.

// tunnel is one running ssh -L forward.
type tunnel struct {
	cmd   *exec.Cmd
	dir   string // local 0700 directory of sock
	sock  string
	done  chan struct{}
	errb  lockedBuffer
	alive error
}

// remoteRun runs a shell command on the libvirt host and returns its
// output.
func (d sshDialer) remoteRun(ctx context.Context, script string) (string, error) {
	bin := d.SSH
	if bin == "" {
		bin = "ssh"
	}
	out, err := exec.CommandContext(ctx, bin, append(d.baseArgs(), "--", d.target(), script)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: ssh %s: %v: %s", ErrDial, d.Host, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// remoteDir makes a job's directory (PREFIX-XXXXXX) on the libvirt host
// (mode 0777 as the local one: QEMU runs as libvirt-qemu there).
func (d sshDialer) remoteDir(ctx context.Context, scratch, prefix string) (string, error) {
	if strings.ContainsAny(scratch, "'\x00\n") {
		return "", fmt.Errorf("scratch directory %q: quotes or control characters", scratch)
	}
	dir, err := d.remoteRun(ctx, fmt.Sprintf("d=$(mktemp -d '%s/%sXXXXXX') && chmod 777 \"$d\" && echo \"$d\"", scratch, prefix))
	if err != nil {
		return "", fmt.Errorf("make the job's directory on %s: %w", d.Host, err)
	}
	if !strings.HasPrefix(filepath.Base(dir), prefix) || strings.ContainsAny(dir, "'\n") {
		return "", fmt.Errorf("%w: mktemp on %s answered %q", ErrDial, d.Host, dir)
	}
	return dir, nil
}

// removeRemoteDir removes a job directory remoteJobDir made.
func (d sshDialer) removeRemoteDir(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.remoteRun(ctx, fmt.Sprintf("rm -rf '%s'", dir))
	return err
}

// forward starts ssh -N -L LOCAL:REMOTE and waits until the local socket
// listens.
func (d sshDialer) forward(ctx context.Context, remote string) (*tunnel, error) {
	dir, err := os.MkdirTemp("", "blockwise-tunnel-")
	if err != nil {
		return nil, err
	}
	t := &tunnel{dir: dir, sock: filepath.Join(dir, "nbd.sock"), done: make(chan struct{})}
	bin := d.SSH
	if bin == "" {
		bin = "ssh"
	}
	args := append(d.baseArgs(), "-N", "-o", "ExitOnForwardFailure=yes", "-L", t.sock+":"+remote, "--", d.target())
	t.cmd = exec.Command(bin, args...)
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t.cmd.Stderr = &t.errb
	if err := t.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: ssh -L: %v", ErrDial, err)
	}
	go func() { t.alive = t.cmd.Wait(); close(t.done) }() // ends when ssh does (close kills it)
	if err := t.wait(ctx); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// wait polls the local socket until ssh accepts on it (the file appears
// at bind, before listen: a connect then is refused). The probe is
// forwarded to QEMU's NBD server, which drops a client gone before its
// handshake.
func (t *tunnel) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("unix", t.sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-t.done:
			return fmt.Errorf("%w: ssh -L exited: %v: %s", ErrDial, t.alive, t.errb.String())
		case <-ctx.Done():
			return fmt.Errorf("%w: ssh -L: no local socket: %v: %s", ErrDial, ctx.Err(), t.errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// close ends the forward and removes its directory.
func (t *tunnel) close() {
	if t == nil {
		return
	}
	t.cmd.Process.Kill()
	<-t.done
	os.RemoveAll(t.dir)
}

// errNoRemoteOffline: a shut-off domain's images are read by qemu-nbd
// on this host, which a remote domain's are not.
var errNoRemoteOffline = errors.New("a shut-off domain reached over qemu+ssh:// cannot be backed up (its images are read by qemu-nbd on the libvirt host's file system): start it, or run blockwise on that host")

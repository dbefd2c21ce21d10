package libvirt

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// sshDialer reaches a remote libvirtd's unix socket the way virsh -c
// qemu+ssh:// does: an ssh subprocess whose stdin and stdout are the
// stream, running on the remote side virt-ssh-helper (libvirt ≥ 6.8,
// for the default socket) or else netcat (nc -U SOCKET). OpenSSH 9.2's
// -W does not forward to a unix socket path (tried here: no channel).
type sshDialer struct {
	SSH     string // the ssh binary ("ssh")
	User    string
	Host    string
	Port    int    // 0: ssh's default
	KeyFile string // -i, "" for ssh's default keys
	Socket  string // remote libvirtd socket
	// Options are extra -o options (KEY=VALUE), e.g. UserKnownHostsFile.
	Options []string
}

// args is the ssh command line, without the binary.
func (d sshDialer) args() []string {
	return append(d.baseArgs(), "--", d.target(), remoteCommand(d.Socket))
}

// target is [USER@]HOST.
func (d sshDialer) target() string {
	if d.User != "" {
		return d.User + "@" + d.Host
	}
	return d.Host
}

// baseArgs are the options every ssh of the source takes.
func (d sshDialer) baseArgs() []string {
	a := []string{"-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-e", "none"}
	if d.Port != 0 {
		a = append(a, "-p", strconv.Itoa(d.Port))
	}
	if d.KeyFile != "" {
		a = append(a, "-i", d.KeyFile)
	}
	for _, o := range d.Options {
		a = append(a, "-o", o)
	}
	return a
}

// remoteCommand is what the remote login shell runs (virsh's "auto"
// netcat mode); the socket is single-quoted (sshOf refuses quotes).
func remoteCommand(sock string) string {
	return fmt.Sprintf("if command -v virt-ssh-helper >/dev/null 2>&1 && [ '%s' = %s ]; then exec virt-ssh-helper qemu:///system; else exec nc -U '%s'; fi",
		sock, DefaultSocket, sock)
}

// Dial implements go-libvirt's socket.Dialer.
func (d sshDialer) Dial() (net.Conn, error) {
	bin := d.SSH
	if bin == "" {
		bin = "ssh"
	}
	cmd := exec.Command(bin, d.args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// ssh's stdout is a pipe of our own, not StdoutPipe: Wait (run as
	// soon as ssh starts) closes StdoutPipe's end once ssh exits, and a
	// Read after that fails with "file already closed" instead of EOF,
	// losing what ssh wrote last and its complaint.
	out, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	c := &sshConn{cmd: cmd, in: in, out: out, done: make(chan struct{})}
	cmd.Stderr = &c.stderr
	err = cmd.Start()
	w.Close() // ssh holds its own copy: EOF comes when it exits
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("%w: ssh: %v", ErrDial, err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }() // ends when ssh does (Close kills it)
	return c, nil
}

// ErrDial: the ssh transport to a remote libvirtd failed.
var ErrDial = errors.New("cannot reach libvirtd over ssh")

// sshConn is the ssh subprocess as a net.Conn. Deadlines are not
// supported (go-libvirt does not set any).
type sshConn struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    io.ReadCloser
	done   chan struct{}
	err    error
	stderr lockedBuffer
	once   sync.Once
}

// Read reads the stream; at its end, ssh's complaint (if any) is the
// error, so a refused key or host says so.
func (c *sshConn) Read(p []byte) (int, error) {
	n, err := c.out.Read(p)
	if err == io.EOF && n == 0 {
		select { // ssh exited: its stderr says why once Wait has copied it
		case <-c.done:
		case <-time.After(10 * time.Second): // a bound, not a pause: a process that closed stdout and lives on
		}
		if msg := c.stderr.String(); msg != "" {
			return 0, fmt.Errorf("%w: %s", ErrDial, msg)
		}
	}
	return n, err
}

// Write writes to ssh's stdin.
func (c *sshConn) Write(p []byte) (int, error) { return c.in.Write(p) }

// Close ends the stream and the ssh process.
func (c *sshConn) Close() error {
	c.once.Do(func() {
		c.in.Close()
		c.cmd.Process.Kill()
		<-c.done
		c.out.Close()
	})
	return nil
}

// LocalAddr implements net.Conn (no address: a subprocess).
func (c *sshConn) LocalAddr() net.Addr { return sshAddr{} }

// RemoteAddr implements net.Conn.
func (c *sshConn) RemoteAddr() net.Addr { return sshAddr{} }

// SetDeadline implements net.Conn; a no-op.
func (c *sshConn) SetDeadline(t time.Time) error { return nil }

// SetReadDeadline implements net.Conn; a no-op.
func (c *sshConn) SetReadDeadline(t time.Time) error { return nil }

// SetWriteDeadline implements net.Conn; a no-op.
func (c *sshConn) SetWriteDeadline(t time.Time) error { return nil }

type sshAddr struct{}

// Network implements net.Addr.
func (sshAddr) Network() string { return "ssh" }

// String implements net.Addr.
func (sshAddr) String() string { return "ssh" }

// lockedBuffer collects ssh's stderr (written by exec's copier, read by
// Read after EOF).
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

// Write keeps the first 4 KiB.
func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 4096 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

// String is what was kept.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

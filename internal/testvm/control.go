package testvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/qmp"
)

// Dir is the directory of the VM's files (sockets, console log).
func (vm *VM) Dir() string { return vm.dir }

// QMPSocket is the path of QEMU's QMP monitor socket.
func (vm *VM) QMPSocket() string { return vm.qmpPath }

// AgentSocket is the host side of the guest agent's port (only with
// Options.GuestAgent). QEMU accepts one client at a time on it.
func (vm *VM) AgentSocket() string { return vm.agentPath }

// Drives returns the drives with their IDs filled in.
func (vm *VM) Drives() []Drive { return vm.opt.Drives }

// PID is QEMU's process id.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Exited is closed once QEMU has exited (and been reaped).
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// QMP returns the VM's own QMP connection (opened on first use, closed
// at cleanup). QEMU accepts one client per monitor socket: code under
// test that needs the monitor should get its own -qmp socket through
// Options.ExtraArgs, or use this one only after the test's own client
// is closed.
func (vm *VM) QMP(ctx context.Context) (*qmp.Client, error) {
	vm.qmpOnce.Do(func() {
		vm.qmpc, vm.qmpErr = qmp.Dial(ctx, vm.qmpPath)
	})
	return vm.qmpc, vm.qmpErr
}

// connectShell dials the shell port's host side (QEMU listens on it
// from its start).
func (vm *VM) connectShell(ctx context.Context) error {
	sh, err := dialShell(ctx, vm.shellPath, vm.exited)
	if err != nil {
		return err
	}
	vm.sh = sh
	return nil
}

// Run runs a shell script in the guest (see Shell.Run).
func (vm *VM) Run(ctx context.Context, script string) (string, error) {
	if vm.sh == nil {
		return "", ErrGone
	}
	return vm.sh.Run(ctx, script)
}

// Shell is the host side of a guest's command shell (the guest's init
// serves it on the virtio-serial port org.blockwise.shell).
type Shell struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	nextID int
}

// DialShell connects to a guest shell's unix socket (for a guest started
// by someone else, such as libvirt, from an initramfs of
// BuildInitramfs), retrying until ctx ends.
func DialShell(ctx context.Context, path string) (*Shell, error) {
	return dialShell(ctx, path, nil)
}

func dialShell(ctx context.Context, path string, exited <-chan struct{}) (*Shell, error) {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return &Shell{conn: c, r: bufio.NewReaderSize(c, 1<<20)}, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%w: qemu exited during boot", ErrGone)
		case <-ctx.Done():
			return nil, fmt.Errorf("testvm: shell socket: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Run runs a shell script in the guest (busybox sh; stdout and stderr
// together) and returns its output. A non-zero exit is an *ExitError
// (errors.Is ErrExit). Commands run one at a time. On a timeout the
// channel is left out of step, so later Runs fail: a command that may
// hang should carry its own `timeout`.
func (s *Shell) Run(ctx context.Context, script string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return "", ErrGone
	}
	s.nextID++
	id := strconv.Itoa(s.nextID)
	if dl, ok := ctx.Deadline(); ok {
		s.conn.SetDeadline(dl)
		defer s.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	line := id + " " + base64.StdEncoding.EncodeToString([]byte(script)) + "\n"
	if _, err := s.conn.Write([]byte(line)); err != nil {
		return "", s.runErr(ctx, script, err)
	}
	out, status, err := s.readReply(id)
	if err != nil {
		return "", s.runErr(ctx, script, err)
	}
	if status != 0 {
		return out, &ExitError{Cmd: script, Status: status, Output: out}
	}
	return out, nil
}

// send writes a script without waiting for a reply (poweroff).
func (s *Shell) send(script string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Write([]byte("0 " + base64.StdEncoding.EncodeToString([]byte(script)) + "\n"))
	}
}

// Close closes the connection.
func (s *Shell) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

func (s *Shell) runErr(ctx context.Context, script string, err error) error {
	if ctx.Err() != nil {
		s.conn.Close() // out of step now
		s.conn = nil
		return fmt.Errorf("testvm: %q: %w", script, ctx.Err())
	}
	return fmt.Errorf("%w: %q: %v", ErrGone, script, err)
}

// readReply reads "B id", the base64 output, "E id status"; replies to
// earlier (abandoned) ids are skipped.
func (s *Shell) readReply(id string) (string, int, error) {
	var b64 strings.Builder
	in := false
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return "", 0, err
		}
		l = strings.TrimRight(l, "\r\n")
		switch {
		case l == "B "+id:
			in = true
		case strings.HasPrefix(l, "E "+id+" "):
			if !in {
				continue
			}
			st, err := strconv.Atoi(strings.TrimPrefix(l, "E "+id+" "))
			if err != nil {
				return "", 0, fmt.Errorf("testvm: bad status line %q", l)
			}
			out, err := base64.StdEncoding.DecodeString(b64.String())
			if err != nil {
				return "", 0, fmt.Errorf("testvm: bad output: %w", err)
			}
			return string(out), st, nil
		case in:
			b64.WriteString(l)
		}
	}
}

// PoweroffScript syncs and unmounts the guest's file systems and powers
// it off (for Shell's users: send it with Run and expect no reply).
const PoweroffScript = "sync; umount -a -r >/dev/null 2>&1; sync; poweroff -f"

// Shutdown syncs and unmounts the guest's file systems, powers it off
// and waits for QEMU to exit; if it has not within ctx, QEMU is asked
// to quit over QMP, then killed. QEMU closes its images cleanly (qcow2
// persistent bitmaps are stored) unless it had to be killed.
func (vm *VM) Shutdown(ctx context.Context) error {
	if vm.sh != nil { // no reply comes: the guest powers off
		vm.sh.send(PoweroffScript)
	}
	select {
	case <-vm.exited:
		return nil
	case <-ctx.Done():
	}
	qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := vm.QMP(qctx); err == nil {
		c.Execute(qctx, "quit", nil, nil)
	}
	select {
	case <-vm.exited:
		return fmt.Errorf("testvm: guest did not power off in time; quit over QMP")
	case <-qctx.Done():
	}
	vm.Kill()
	return fmt.Errorf("testvm: guest did not power off in time; killed")
}

// Kill sends QEMU SIGKILL (an unclean stop: qcow2 bitmaps are left
// marked in-use, so QEMU calls them inconsistent next time) and waits
// for it to be reaped.
func (vm *VM) Kill() {
	vm.cmd.Process.Signal(syscall.SIGKILL)
	<-vm.exited
}

// Signal sends sig to QEMU.
func (vm *VM) Signal(sig os.Signal) error { return vm.cmd.Process.Signal(sig) }

func (vm *VM) cleanup() {
	select {
	case <-vm.exited:
	default:
		vm.Kill()
	}
	if vm.sh != nil {
		vm.sh.Close()
	}
	if vm.qmpc != nil {
		vm.qmpc.Close()
	}
}

// Diagnostics returns the tail of the guest console and QEMU's output,
// for failure messages.
func (vm *VM) Diagnostics() string {
	con, _ := os.ReadFile(vm.logPath)
	if len(con) > 4096 {
		con = con[len(con)-4096:]
	}
	return fmt.Sprintf("--- guest console (tail) ---\n%s\n--- qemu stdout ---\n%s\n--- qemu stderr ---\n%s",
		con, vm.cmd.Stdout.(*tail).String(), vm.cmd.Stderr.(*tail).String())
}

// tail keeps the last 8 KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func newTail() *tail { return &tail{} }

// Write implements io.Writer.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = bytes.Clone(t.buf[len(t.buf)-8192:])
	}
	return len(p), nil
}

// String returns what it holds.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

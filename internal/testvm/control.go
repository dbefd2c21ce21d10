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
	for {
		c, err := net.Dial("unix", vm.shellPath)
		if err == nil {
			vm.sh, vm.shR = c, bufio.NewReaderSize(c, 1<<20)
			return nil
		}
		select {
		case <-vm.exited:
			return fmt.Errorf("%w: qemu exited during boot: %v", ErrGone, vm.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("testvm: shell socket: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Run runs a shell script in the guest (busybox sh; stdout and stderr
// together) and returns its output. A non-zero exit is an *ExitError
// (errors.Is ErrExit). Commands run one at a time. On a timeout the
// channel is left out of step, so later Runs fail: a command that may
// hang should carry its own `timeout`.
func (vm *VM) Run(ctx context.Context, script string) (string, error) {
	vm.shMu.Lock()
	defer vm.shMu.Unlock()
	if vm.sh == nil {
		return "", ErrGone
	}
	vm.nextID++
	id := strconv.Itoa(vm.nextID)
	if dl, ok := ctx.Deadline(); ok {
		vm.sh.SetDeadline(dl)
		defer vm.sh.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { vm.sh.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	line := id + " " + base64.StdEncoding.EncodeToString([]byte(script)) + "\n"
	if _, err := vm.sh.Write([]byte(line)); err != nil {
		return "", vm.runErr(ctx, script, err)
	}
	out, status, err := vm.readReply(id)
	if err != nil {
		return "", vm.runErr(ctx, script, err)
	}
	if status != 0 {
		return out, &ExitError{Cmd: script, Status: status, Output: out}
	}
	return out, nil
}

func (vm *VM) runErr(ctx context.Context, script string, err error) error {
	if ctx.Err() != nil {
		vm.sh.Close() // out of step now
		vm.sh = nil
		return fmt.Errorf("testvm: %q: %w", script, ctx.Err())
	}
	return fmt.Errorf("%w: %q: %v", ErrGone, script, err)
}

// readReply reads "B id", the base64 output, "E id status"; replies to
// earlier (abandoned) ids are skipped.
func (vm *VM) readReply(id string) (string, int, error) {
	var b64 strings.Builder
	in := false
	for {
		l, err := vm.shR.ReadString('\n')
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

// Shutdown syncs and unmounts the guest's file systems, powers it off
// and waits for QEMU to exit; if it has not within ctx, QEMU is asked
// to quit over QMP, then killed. QEMU closes its images cleanly (qcow2
// persistent bitmaps are stored) unless it had to be killed.
func (vm *VM) Shutdown(ctx context.Context) error {
	vm.shMu.Lock()
	if vm.sh != nil {
		// No reply comes: the guest powers off.
		script := "sync; umount -a -r >/dev/null 2>&1; sync; poweroff -f"
		vm.sh.Write([]byte("0 " + base64.StdEncoding.EncodeToString([]byte(script)) + "\n"))
	}
	vm.shMu.Unlock()
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
	vm.shMu.Lock()
	if vm.sh != nil {
		vm.sh.Close()
		vm.sh = nil
	}
	vm.shMu.Unlock()
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

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = bytes.Clone(t.buf[len(t.buf)-8192:])
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

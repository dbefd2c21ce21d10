package s3test

import "syscall"

// dieWithParent makes the kernel kill versitygw when the test binary
// dies (a panic, a timeout, kill -9), so no server outlives its tests.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

package fsutil

import (
	"runtime"
	"sync"
)

// Blocking runs f, a call that waits on the device (a large O_DIRECT
// write, an fsync), with GOMAXPROCS raised by one while it runs.
//
// Why: a goroutine in a system call keeps its P until the runtime's
// monitor thread notices, and that thread, when the program makes few
// system calls, sleeps up to 10 ms between looks (golang/go#18236). A
// backup's 16 MiB pack write takes ~10 ms, so each one idled a core for
// most of its length: on two cores ~8% of a full backup's CPU time went
// to iowait. With a spare P the other goroutines keep both cores busy
// (measured: full 4 GiB backup ~5.35 -> ~5.05 s). Each change of
// GOMAXPROCS stops the world for some microseconds, so shorter writes do
// not use this: with restore's 4 MiB writes included, a 4 GiB restore,
// which waits on the disk rather than the CPU, went 3.3 -> 3.65 s.
//
// Setting GOMAXPROCS turns off the runtime's own updates of it from the
// CPU limit; a backup or restore process runs too briefly to miss them.
func Blocking(f func() error) error {
	blocking.enter()
	defer blocking.leave()
	return f()
}

// BlockingMin is the write size from which DirectFile uses Blocking:
// a 16 MiB pack, not a restore's 4 MiB run.
const BlockingMin = 8 << 20

var blocking extraProcs

type extraProcs struct {
	mu   sync.Mutex
	n    int // calls in Blocking now
	base int // GOMAXPROCS before the first of them
}

func (e *extraProcs) enter() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		e.base = runtime.GOMAXPROCS(0)
	}
	e.n++
	runtime.GOMAXPROCS(e.base + e.n)
}

func (e *extraProcs) leave() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n--
	runtime.GOMAXPROCS(e.base + e.n)
}

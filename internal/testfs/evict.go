package testfs

import (
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Evict drops every page of the named files from the page cache and
// waits until mincore(2) shows none resident, so a test of a read that
// must miss the cache (RWF_NOWAIT) starts from a known state. One
// FADV_DONTNEED is not enough: pages of a readahead still in flight (a
// no-wait read's miss starts one) are locked, survive it and land in the
// cache later. The caller writes dirty data back first.
func Evict(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		evictFile(t, name)
	}
}

func evictFile(t testing.TB, name string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for try := 0; ; try++ {
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		n, err := ResidentPages(f)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if try == 100 {
			t.Fatalf("%s: %d pages still cached after %d evictions", name, n, try+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ResidentPages counts f's pages in the page cache (mincore(2) over a
// shared read-only map, which faults nothing in).
func ResidentPages(f *os.File) (int, error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 || !st.Mode().IsRegular() {
		return 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	pg := os.Getpagesize()
	vec := make([]byte, (len(m)+pg-1)/pg)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return 0, e
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n, nil
}

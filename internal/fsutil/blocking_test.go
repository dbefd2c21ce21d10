package fsutil

import (
	"runtime"
	"sync"
	"testing"
)

// TestBlocking: each call in Blocking adds one P for as long as it runs,
// concurrent calls add one each, and the count returns to where it was.
func TestBlocking(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	var inner int
	if err := Blocking(func() error { inner = runtime.GOMAXPROCS(0); return nil }); err != nil {
		t.Fatal(err)
	}
	if inner != base+1 || runtime.GOMAXPROCS(0) != base {
		t.Fatalf("GOMAXPROCS %d inside, %d after; want %d and %d", inner, runtime.GOMAXPROCS(0), base+1, base)
	}
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			Blocking(func() error { started <- struct{}{}; <-release; return nil })
		})
	}
	for range 3 {
		<-started
	}
	if got := runtime.GOMAXPROCS(0); got != base+3 {
		t.Errorf("three calls in flight: GOMAXPROCS %d, want %d", got, base+3)
	}
	close(release)
	wg.Wait()
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("after: GOMAXPROCS %d, want %d", got, base)
	}
}

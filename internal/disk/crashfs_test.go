package disk

import (
	"bytes"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// syncBuffer collects the loop's announcements across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestCrashPowerLoss runs TestCrashSIGKILL's random workload on a
// vfstest.CrashFS and cuts the power instead of killing the process:
// every write not followed by a sync and every directory change not
// followed by a sync of its directory is lost, which a SIGKILL (the page
// cache survives it) cannot show. After each crash the disk must open,
// pass Check, hold every flushed write, its snapshots' images, and report
// every write since the last snapshot as changed (crashModel). The
// machine reboots with the power: the datastore is reopened under the
// CrashFS's new boot ID, so CBT must fall back to its durable regions
// (the block records after the last sync are gone).
func TestCrashPowerLoss(t *testing.T) {
	iters := 40
	if long {
		iters = 1000
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	const dir = "/ds"
	fsys := vfstest.NewCrashFS()
	ds, err := OpenDatastore(dir, WithFS(fsys), WithBootID(fsys.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", crashSize, Options{CBT: crashCBT})
	if err != nil {
		t.Fatal(err)
	}
	first, err := d.CreateSnapshot("base", "")
	if err != nil {
		t.Fatal(err)
	}
	c := &crashModel{flushed: make([]byte, crashSize), sinceID: first.ChangeID,
		snaps: map[string][]byte{"base": make([]byte, crashSize)}, gone: map[string]bool{}, coarse: true}
	cur := make([]byte, crashSize)
	for i := range iters {
		if i > 0 { // the first round continues from Create
			if d, err = ds.Open("c"); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
		var out syncBuffer
		done := make(chan error, 1)
		seed := rng.Int63() // here: the goroutine must not share rng
		go func() { done <- crashLoop(d, seed, &out) }()
		time.Sleep(time.Duration(1+rng.Intn(20)) * time.Millisecond)
		fsys = fsys.Crash()
		<-done    // its next file operation failed
		d.Close() // stops a consolidation; fails like the rest
		if ds, err = OpenDatastore(dir, WithFS(fsys), WithBootID(fsys.BootID())); err != nil {
			t.Fatalf("iteration %d: datastore after the crash: %v", i, err)
		}
		c.iter = i
		for _, l := range strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n") {
			if l != "" {
				c.apply(l, &cur)
			}
		}
		cur = c.verifyAfterCrash(t, ds, i)
	}
}

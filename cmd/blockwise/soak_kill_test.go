package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
)

// soakKillsEnv sets how many times TestSoakServeKills kills `blockwise
// serve` (scripts/soak.sh: 1000); unset, the test is skipped.
const soakKillsEnv = "BLOCKWISE_SOAK_KILLS"

const (
	soakSize   = 16 << 20
	soakSector = 512
	soakBlock  = 64 << 10 // the disk's CBT granularity
)

// soakWrite is one NBD write: its bytes and whether its reply came.
type soakWrite struct {
	off   int64
	data  []byte
	acked bool
}

// soakState is what the writer did between two kills.
type soakState struct {
	mu     sync.Mutex
	writes []*soakWrite // since the last acknowledged flush
	cbt    []*soakWrite // since the change ID the next check asks from
	snaps  []string     // snapshots it asked for, taken or not
	flushN int          // writes covered by the last acknowledged flush
}

// TestSoakServeKills SIGKILLs a real `blockwise serve` N times while a
// client writes random data over NBD, flushes, and takes snapshots
// through the CLI; after each restart every sector holds its flushed
// data or a write issued since, and `changes` since the previous check's
// change ID lists every acknowledged write (docs/format.md invariant 1a).
// It prints "kills: N" for scripts/soak.sh.
func TestSoakServeKills(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(soakKillsEnv))
	if n == 0 {
		t.Skip(soakKillsEnv + " unset: run by scripts/soak.sh")
	}
	ctx := context.Background()
	d := startServe(t)
	dir := d.dir
	d.must(t, "disk", "create", "vm", "--size", fmt.Sprint(soakSize), "--granularity", "64K")
	var base client.Snapshot
	d.jsonOut(t, &base, "snapshot", "create", "vm", "chk-0")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	flushed := make([]byte, soakSize)
	since, lastChk := base.ChangeID, "chk-0"
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	writes, snaps := 0, 0
	for i := 1; i <= n; i++ {
		st := &soakState{}
		c, err := nbd.Dial(ctx, uri, nil)
		if err != nil {
			t.Fatalf("kill %d: dial: %v", i, err)
		}
		done := make(chan struct{})
		go func() { defer close(done); soakWriter(ctx, c, d, st, rng.Uint64(), i) }()
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.cmd.Wait()
		<-done
		c.Close()
		d = startServeIn(t, dir)
		flushed, since = soakVerify(t, d, uri, i, flushed, st, since)
		writes, snaps = writes+len(st.writes), snaps+len(st.snaps)
		for _, s := range append(st.snaps, lastChk) {
			d.run(t, "snapshot", "rm", "vm", s) // taken or not: keep few
		}
		lastChk = fmt.Sprintf("chk-%d", i)
	}
	sigterm(t, d)
	fmt.Printf("kills: %d (%d NBD writes, %d snapshots asked for)\n", n, writes, snaps)
}

// soakWriter writes, flushes and snapshots until the server dies.
func soakWriter(ctx context.Context, c *nbd.Client, d *serveProc, st *soakState, seed uint64, iter int) {
	rng := rand.New(rand.NewPCG(seed, 2))
	for j := 0; ; j++ {
		switch op := rng.IntN(100); {
		case op < 85:
			off := rng.Int64N(soakSize/soakSector) * soakSector
			w := &soakWrite{off: off, data: make([]byte, min(soakSize-off, (rng.Int64N(128)+1)*soakSector))}
			for k := range w.data {
				w.data[k] = byte(rng.Uint32())
			}
			st.mu.Lock()
			st.writes, st.cbt = append(st.writes, w), append(st.cbt, w)
			st.mu.Unlock()
			if c.WriteAt(ctx, w.data, w.off, rng.IntN(8) == 0) != nil {
				return
			}
			st.mu.Lock()
			w.acked = true
			st.mu.Unlock()
		case op < 95:
			st.mu.Lock()
			n := len(st.writes)
			st.mu.Unlock()
			if c.Flush(ctx) != nil {
				return
			}
			st.mu.Lock()
			st.flushN = n
			st.mu.Unlock()
		default:
			name := fmt.Sprintf("s%d-%d", iter, j)
			st.mu.Lock()
			st.snaps = append(st.snaps, name)
			st.mu.Unlock()
			if d.command(nil, "snapshot", "create", "vm", name).Run() != nil {
				return
			}
		}
	}
}

// soakVerify checks the restarted server against what the writer did and
// returns the image it now holds and the change ID of its check snapshot.
func soakVerify(t *testing.T, d *serveProc, uri string, i int, flushed []byte, st *soakState, since string) ([]byte, string) {
	t.Helper()
	ctx := context.Background()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatalf("kill %d: dial after restart: %v", i, err)
	}
	got := make([]byte, soakSize)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("kill %d: read: %v", i, err)
	}
	c.Close()
	want := bytes.Clone(flushed)
	for _, w := range st.writes[:st.flushN] {
		copy(want[w.off:], w.data)
	}
	post := st.writes[st.flushN:]
	for s := int64(0); s < soakSize; s += soakSector {
		if !soakSectorOK(got, want, post, s) {
			t.Fatalf("kill %d: sector at %d holds neither its flushed data nor a write issued since", i, s)
		}
	}
	var chk client.Snapshot
	name := fmt.Sprintf("chk-%d", i)
	d.jsonOut(t, &chk, "snapshot", "create", "vm", name)
	var ch client.ChangedAreas
	d.jsonOut(t, &ch, "changes", "vm", "--snapshot", name, "--since", since)
	covered := map[int64]bool{}
	for _, a := range ch.ChangedArea {
		for o := a.Start / soakBlock * soakBlock; o < a.Start+a.Length; o += soakBlock {
			covered[o] = true
		}
	}
	for _, w := range st.cbt {
		for o := w.off / soakBlock * soakBlock; w.acked && o < w.off+int64(len(w.data)); o += soakBlock {
			if !covered[o] {
				t.Fatalf("kill %d: an acknowledged write at %d is missing from changes since %s", i, o, since)
			}
		}
	}
	return got, chk.ChangeID
}

func soakSectorOK(got, want []byte, post []*soakWrite, s int64) bool {
	g := got[s : s+soakSector]
	if bytes.Equal(g, want[s:s+soakSector]) {
		return true
	}
	for _, w := range post {
		if s >= w.off && s < w.off+int64(len(w.data)) && bytes.Equal(g, w.data[s-w.off:s-w.off+soakSector]) {
			return true
		}
	}
	return false
}

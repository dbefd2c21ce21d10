package transport

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/nbd"
)

// ticketClient is the client options of a ticket for export, which both
// paths accept (and the probe's reconnections too).
func ticketClient(t *testing.T, th *testHost, export string) *nbd.ClientOptions {
	t.Helper()
	dn, sn, _ := strings.Cut(export, "@")
	tc, release, err := TicketTLS(context.Background(), th.env, dn, sn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return &nbd.ClientOptions{TLSConfig: tc}
}

func dialBoth(t *testing.T, th *testHost, export string, every int) *nbd.Multipath {
	t.Helper()
	uris := []string{"nbds://" + th.TCP[0] + "/" + export, "nbds://" + th.TCP[1] + "/" + export}
	m, err := nbd.DialMultipath(context.Background(), uris, nbd.MultipathOptions{
		Policy: nbd.PolicyRoundRobin, SwitchEvery: every, ProbeInterval: 20 * time.Millisecond,
		Client: ticketClient(t, th, export)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestMultipathSurvivesPathLoss reads a snapshot and writes (restores)
// a disk over two round-robin paths while one dies and comes back.
func TestMultipathSurvivesPathLoss(t *testing.T) {
	th := startHost(t)
	const size, chunk = 8 << 20, 64 << 10
	d := th.makeDisk(t, "vm", size)
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	if _, err := d.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	m := dialBoth(t, th, "vm@s", 4)
	got := make([]byte, size)
	transfer(t, th, size/chunk, func(i int) error {
		return m.ReadAt(context.Background(), got[i*chunk:(i+1)*chunk], int64(i*chunk))
	})
	if !bytes.Equal(got, want) {
		t.Fatal("read over multipath differs from the snapshot")
	}
	checkCounters(t, m)

	dst, err := th.Host.Create("dst", size, diskOptions())
	if err != nil {
		t.Fatal(err)
	}
	w := dialBoth(t, th, "dst", 4)
	transfer(t, th, size/chunk, func(i int) error {
		return w.WriteAt(context.Background(), want[i*chunk:(i+1)*chunk], int64(i*chunk), false)
	})
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restore over multipath differs (%v)", err)
	}
	checkCounters(t, w)
}

// transfer runs n steps, killing path 1 at a third and restarting it at
// two thirds, waiting for the probe to bring it back.
func transfer(t *testing.T, th *testHost, n int, step func(int) error) {
	t.Helper()
	var restart func()
	for i := 0; i < n; i++ {
		switch i {
		case n / 3:
			restart = th.KillPath(t, 1)
		case 2 * n / 3:
			restart()
			time.Sleep(100 * time.Millisecond) // a few probe intervals
		}
		if err := step(i); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func checkCounters(t *testing.T, m *nbd.Multipath) {
	t.Helper()
	ps := m.Paths()
	for i, p := range ps {
		if p.Requests == 0 || p.State != nbd.PathActive {
			t.Fatalf("path %d: %+v", i, p)
		}
	}
	if ps[1].Failovers == 0 || ps[1].Restored == 0 || ps[0].Failovers != 0 {
		t.Fatalf("counters: %+v", ps)
	}
	t.Logf("paths: %+v", ps)
}

// TestRoundRobinSpreads: with SwitchEvery 1000 (NMP's default), 4000
// requests land 2000 on each path.
func TestRoundRobinSpreads(t *testing.T) {
	th := startHost(t)
	d := th.makeDisk(t, "vm", 1<<20)
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	m := dialBoth(t, th, "vm@s", 0)
	buf := make([]byte, 4096)
	for i := 0; i < 4000; i++ {
		if err := m.ReadAt(context.Background(), buf, int64(i%256)*4096); err != nil {
			t.Fatal(err)
		}
	}
	ps := m.Paths()
	if ps[0].Requests != 2000 || ps[1].Requests != 2000 {
		t.Fatalf("requests %d / %d, want 2000 each", ps[0].Requests, ps[1].Requests)
	}
}

// TestFixedFallsBackAndReturns: fixed uses the preferred path, falls
// back while it is dead and returns to it once probed healthy.
func TestFixedFallsBackAndReturns(t *testing.T) {
	th := startHost(t)
	d := th.makeDisk(t, "vm", 1<<20)
	if _, err := d.CreateSnapshot("s", ""); err != nil {
		t.Fatal(err)
	}
	uris := []string{"nbds://" + th.TCP[0] + "/vm@s", "nbds://" + th.TCP[1] + "/vm@s"}
	m, err := nbd.DialMultipath(context.Background(), uris, nbd.MultipathOptions{Policy: nbd.PolicyFixed, Preferred: 1,
		ProbeInterval: 20 * time.Millisecond, Client: ticketClient(t, th, "vm@s")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	buf := make([]byte, 4096)
	read := func() {
		if err := m.ReadAt(context.Background(), buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	read()
	restart := th.KillPath(t, 1)
	read()
	if ps := m.Paths(); ps[1].State != nbd.PathDead || ps[0].State != nbd.PathActive {
		t.Fatalf("after loss: %+v", ps)
	}
	restart()
	deadline := time.Now().Add(5 * time.Second)
	for m.Paths()[1].State != nbd.PathActive && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	before := m.Paths()[1].Requests
	read()
	if ps := m.Paths(); ps[1].Requests != before+1 || ps[0].State != nbd.PathStandby {
		t.Fatalf("after return: %+v", ps)
	}
}

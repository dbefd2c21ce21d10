package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/testcert"
)

const cawDiskSize = 8 << 20

func cawEnv(t *testing.T) (*apitest.Env, context.Context) {
	t.Helper()
	e := apitest.Start(t, apitest.Options{NBD: true})
	ctx := context.Background()
	if _, err := e.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm", Size: cawDiskSize}); err != nil {
		t.Fatal(err)
	}
	return e, ctx
}

func dialNBD(t *testing.T, e *apitest.Env, ctx context.Context) *nbd.Client {
	t.Helper()
	c, err := nbd.Dial(ctx, e.UnixURI("vm"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSectorLeaseRace: N API clients race for one lease sector, round
// after round, while NBD connections write the rest of the sector's
// grain (which copies the grain up in a snapshot chain) and 1 MiB blocks
// beside it, and an NBD reader watches the sector. Exactly one client
// wins each round; the record read back over NBD is the winner's, whole;
// the NBD writes all land.
func TestSectorLeaseRace(t *testing.T) {
	e, ctx := cawEnv(t)
	if _, err := e.Client.CreateSnapshot(ctx, "vm", "base", ""); err != nil {
		t.Fatal(err)
	}
	const lease = 8192 + 512 // sector 1 of grain 2
	const racers, rounds = 4, 100
	stop := make(chan struct{})
	var bg sync.WaitGroup
	errc := make(chan error, 8)
	lastNeighbour := make([]atomic.Uint32, 8)
	bg.Add(3)
	go func() { // raw NBD writes of the lease grain's other sectors
		defer bg.Done()
		c := dialNBD(t, e, ctx)
		for seq := uint32(1); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			i := int(seq%7) + 2 // sectors 2..8 of the grain (and 0 via 8→ next grain's 0)
			if i == 8 {
				i = 0
			}
			if err := c.WriteAt(ctx, sectorStamp(seq), int64(8192+i*512), false); err != nil {
				errc <- err
				return
			}
			lastNeighbour[i].Store(seq)
		}
	}()
	go func() { // 1 MiB writes at full speed beside it
		defer bg.Done()
		c := dialNBD(t, e, ctx)
		buf := bytes.Repeat([]byte{0x5a}, 1<<20)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.WriteAt(ctx, buf, int64(1+i%6)<<20, false); err != nil {
				errc <- err
				return
			}
		}
	}()
	var reads, torn atomic.Int64
	go func() { // a reader of the lease sector: always a whole record
		defer bg.Done()
		c := dialNBD(t, e, ctx)
		p := make([]byte, 512)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.ReadAt(ctx, p, lease); err != nil {
				errc <- err
				return
			}
			reads.Add(1)
			if _, err := client.DecodeLeaseRecord(p); err != nil {
				torn.Add(1)
			}
		}
	}()
	leases := make([]*client.SectorLease, racers)
	for i := range leases {
		leases[i] = e.Client.SectorLease("vm", lease, fmt.Sprintf("host-%d", i), time.Minute)
	}
	check := dialNBD(t, e, ctx)
	for r := range rounds {
		var wg sync.WaitGroup
		won := make([]bool, racers)
		start := make(chan struct{})
		for i, l := range leases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := l.TryAcquire(ctx)
				switch {
				case err == nil:
					won[i] = true
				case !errors.Is(err, client.ErrSectorLeaseHeld):
					errc <- fmt.Errorf("round %d racer %d: %w", r, i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, w := range won {
			if w {
				if winner >= 0 {
					t.Fatalf("round %d: racers %d and %d both won", r, winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won (errors: %d)", r, len(errc))
		}
		p := make([]byte, 512)
		if err := check.ReadAt(ctx, p, lease); err != nil {
			t.Fatal(err)
		}
		rec, err := client.DecodeLeaseRecord(p)
		if err != nil || !rec.Held || rec.Owner != fmt.Sprintf("host-%d", winner) || rec.Generation != uint64(2*r+1) {
			t.Fatalf("round %d: NBD reads %+v (%v), want host-%d's record of generation %d", r, rec, err, winner, 2*r+1)
		}
		if _, err := leases[winner].Renew(ctx); err != nil {
			t.Fatalf("round %d: renew: %v", r, err)
		}
		if _, err := leases[winner].Release(ctx); err != nil {
			t.Fatalf("round %d: release: %v", r, err)
		}
	}
	close(stop)
	bg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	p := make([]byte, 512)
	for i := range lastNeighbour {
		want := lastNeighbour[i].Load()
		if want == 0 {
			continue
		}
		if err := check.ReadAt(ctx, p, int64(8192+i*512)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, sectorStamp(want)) {
			t.Fatalf("sector %d of the lease grain lost its last NBD write %d to a race", i, want)
		}
	}
	if torn.Load() > 0 {
		t.Fatalf("%d of %d NBD reads of the lease sector saw a torn record", torn.Load(), reads.Load())
	}
	t.Logf("%d rounds, %d NBD reads of the lease sector, none torn", rounds, reads.Load())
}

func sectorStamp(seq uint32) []byte {
	p := make([]byte, 512)
	for i := 0; i < 512; i += 4 {
		binary.LittleEndian.PutUint32(p[i:], seq)
	}
	return p
}

// TestCompareAndWriteRawNBD: API compare-and-writes increment a counter
// sector while an NBD client raw-writes the same sector with ever higher
// bases. A read that starts after a raw write was acknowledged never
// sees less than its base: no CAW compared before a raw write and wrote
// after it.
func TestCompareAndWriteRawNBD(t *testing.T) {
	e, ctx := cawEnv(t)
	const off = 4096 * 5
	var base atomic.Uint32
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		c, err := nbd.Dial(ctx, e.UnixURI("vm"), nil)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		p := make([]byte, 512)
		for k := uint32(1); ; k++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			b := k << 16
			if err := c.WriteAt(ctx, sectorStamp(b), off, false); err != nil {
				done <- err
				return
			}
			base.Store(b)
			if err := c.ReadAt(ctx, p, off); err != nil {
				done <- err
				return
			}
			if got := binary.LittleEndian.Uint32(p); got < b || !bytes.Equal(p, sectorStamp(got)) {
				done <- fmt.Errorf("NBD raw write of %d lost or torn: read %d", b, got)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	var wins atomic.Int64
	errc := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := make([]byte, 512)
			for range 150 {
				b := base.Load()
				now, err := e.Client.CompareAndWrite(ctx, "vm", off, cur, sectorStamp(binary.LittleEndian.Uint32(cur)+1))
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, client.ErrMiscompare):
					if got := binary.LittleEndian.Uint32(now); got < b || !bytes.Equal(now, sectorStamp(got)) {
						errc <- fmt.Errorf("miscompare returned %d (torn: %v) after the raw write of %d", got, !bytes.Equal(now, sectorStamp(got)), b)
						return
					}
					cur = now
				default:
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if wins.Load() == 0 {
		t.Fatal("no compare-and-write ever won")
	}
	t.Logf("%d CAWs won against raw NBD writes up to base %d", wins.Load(), base.Load())
}

// TestCompareAndWriteBadInput: every bad request is a clear, typed error
// and changes nothing: out of range, misaligned, oversized or unequal
// lengths, a snapshot, an unknown disk, a wrong token, a miscompare.
func TestCompareAndWriteBadInput(t *testing.T) {
	e, ctx := cawEnv(t)
	if _, err := e.Client.CreateSnapshot(ctx, "vm", "s1", ""); err != nil {
		t.Fatal(err)
	}
	nc := dialNBD(t, e, ctx)
	orig := bytes.Repeat([]byte{0x11}, 8192)
	if err := nc.WriteAt(ctx, orig, 0, true); err != nil {
		t.Fatal(err)
	}
	sec := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	pki := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}})
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	wrongToken, err := client.New("https://"+l.Addr().String(), client.Options{Token: "wrong", TLSConfig: &tls.Config{RootCAs: pki.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		c         *client.Client
		disk      string
		off       int64
		exp, data []byte
		want      error
	}{
		{"past the end", e.Client, "vm", cawDiskSize, sec(0, 512), sec(1, 512), client.ErrOutOfRange},
		{"straddles the end", e.Client, "vm", cawDiskSize - 512, sec(0, 1024), sec(1, 1024), client.ErrOutOfRange},
		{"misaligned offset", e.Client, "vm", 100, sec(0x11, 512), sec(1, 512), client.ErrInvalidRequest},
		{"misaligned length", e.Client, "vm", 0, sec(0x11, 100), sec(1, 100), client.ErrInvalidRequest},
		{"oversized", e.Client, "vm", 0, sec(0x11, 8192), sec(1, 8192), client.ErrInvalidRequest},
		{"lengths differ", e.Client, "vm", 0, sec(0x11, 512), sec(1, 1024), client.ErrInvalidRequest},
		{"empty", e.Client, "vm", 0, nil, nil, client.ErrInvalidRequest},
		{"snapshot", e.Client, "vm@s1", 0, sec(0x11, 512), sec(1, 512), client.ErrInvalidRequest},
		{"unknown disk", e.Client, "nope", 0, sec(0x11, 512), sec(1, 512), client.ErrDiskNotFound},
		{"wrong token", wrongToken, "vm", 0, sec(0x11, 512), sec(1, 512), client.ErrUnauthorized},
		{"miscompare", e.Client, "vm", 512, sec(0x12, 512), sec(1, 512), client.ErrMiscompare},
	}
	for _, c := range cases {
		cur, err := c.c.CompareAndWrite(ctx, c.disk, c.off, c.exp, c.data)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.want == client.ErrMiscompare && !bytes.Equal(cur, sec(0x11, 512)) {
			t.Errorf("miscompare: current %x…, want the disk's bytes", cur[:4])
		} else if c.want != client.ErrMiscompare && cur != nil {
			t.Errorf("%s: current bytes on a non-miscompare error", c.name)
		}
	}
	got := make([]byte, len(orig))
	if err := nc.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	last := make([]byte, 1024)
	if err := nc.ReadAt(ctx, last, cawDiskSize-1024); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) || !bytes.Equal(last, make([]byte, 1024)) {
		t.Fatal("a refused compare-and-write changed the disk")
	}
	// The snapshot's changes: none of the refused requests reached CBT.
	s2, err := e.Client.CreateSnapshot(ctx, "vm", "s2", "")
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := e.Client.Snapshot(ctx, "vm", "s1")
	areas, err := e.Client.AllChangedAreas(ctx, "vm", s2.ID, s1.ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range areas {
		if a.Start+a.Length > 64<<10 {
			t.Fatalf("CBT marked %+v: only the NBD write at 0 changed", a)
		}
	}
	// Bad base64 is a bad request too.
	var p client.Problem
	if code := raw(t, e, "POST", "/v1/disks/vm/compare-and-write", `{"offset":0,"expected":"!!","new":"AA=="}`, &p); code != 400 || p.Type != "invalid-request" {
		t.Fatalf("bad base64: %d %+v", code, p)
	}
}

// TestSectorLeaseTakeover: a held lease whose heartbeat keeps moving is
// never taken over; once its heartbeat stands still for its TTL it is,
// by exactly the stale record, and the old holder learns it lost it. A
// stale token (generation) and a sector that holds no lease are refused.
func TestSectorLeaseTakeover(t *testing.T) {
	e, ctx := cawEnv(t)
	const off = 1 << 20
	const ttl = time.Second // the heartbeat (every ttl/10) must beat a loaded machine's pauses
	a := e.Client.SectorLease("vm", off, "host-a", ttl)
	b := e.Client.SectorLease("vm", off, "host-b", ttl)
	recA, err := a.TryAcquire(ctx)
	if err != nil || recA.Generation != 1 {
		t.Fatalf("acquire: %+v %v", recA, err)
	}
	var he *client.HeldError
	if _, err := b.TryAcquire(ctx); !errors.As(err, &he) || he.Record.Owner != "host-a" {
		t.Fatalf("try while held: %v", err)
	}
	kctx, stopBeat := context.WithCancel(ctx)
	beat := make(chan error, 1)
	go func() { beat <- a.KeepAlive(kctx, ttl/10) }()
	wctx, cancel := context.WithTimeout(ctx, 2*ttl)
	if _, err := b.Acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire against a beating heartbeat: %v, want to wait it out", err)
	}
	cancel()
	stopBeat()
	if err := <-beat; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	start := time.Now()
	recB, err := b.Acquire(ctx)
	if err != nil || recB.Owner != "host-b" || recB.Generation != 2 {
		t.Fatalf("takeover of a stale lease: %+v %v", recB, err)
	}
	if waited := time.Since(start); waited < ttl {
		t.Fatalf("taken over after %v, before the TTL %v passed without a heartbeat", waited, ttl)
	}
	if _, err := a.Renew(ctx); !errors.Is(err, client.ErrSectorLeaseLost) {
		t.Fatalf("the old holder's renew: %v, want lost", err)
	}
	if _, err := a.Release(ctx); !errors.Is(err, client.ErrSectorLeaseLost) {
		t.Fatalf("the old holder's release: %v, want lost", err)
	}
	// A stale token: host-b's own name but the old generation.
	stale := e.Client.SectorLease("vm", off, "host-b", ttl)
	if _, err := stale.Adopt(ctx, 1); !errors.Is(err, client.ErrSectorLeaseLost) {
		t.Fatalf("adopt with a stale generation: %v", err)
	}
	if _, err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := e.Client.ReadSectorLease(ctx, "vm", off)
	if err != nil || rec.Held || rec.Generation != 3 {
		t.Fatalf("after release: %+v %v", rec, err)
	}
	// Not a lease: refused, nothing written.
	nc := dialNBD(t, e, ctx)
	junk := bytes.Repeat([]byte("junk"), 128)
	if err := nc.WriteAt(ctx, junk, 2<<20, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.SectorLease("vm", 2<<20, "x", ttl).TryAcquire(ctx); !errors.Is(err, client.ErrNotALease) {
		t.Fatalf("lease over junk: %v", err)
	}
	p := make([]byte, 512)
	if err := nc.ReadAt(ctx, p, 2<<20); err != nil || !bytes.Equal(p, junk) {
		t.Fatalf("the junk sector changed: %v", err)
	}
}

package main

import (
	"context"
	encbin "encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/testcert"
)

// site is one host of a replication test: `blockwise serve` with its
// own datastore, its API on TCP with TLS.
type site struct {
	*serveProc
	addr string
	pki  *testcert.PKI
	top  *testing.T // restarts belong to the whole test, not a subtest
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startSite(t *testing.T) *site {
	s := &site{addr: freeAddr(t), pki: testcert.New(t), top: t}
	s.serveProc = startServe(t, s.flags()...)
	return s
}

func (s *site) flags() []string {
	return []string{"--api-tcp", s.addr, "--api-tls-cert", s.pki.ServerCert, "--api-tls-key", s.pki.ServerKey}
}

// kill SIGKILLs the host and starts it again on the same datastore.
func (s *site) restart(t *testing.T, kill bool) {
	t.Helper()
	if kill {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	} else {
		sigterm(t, s.serveProc)
	}
	s.serveProc = startServeIn(s.top, s.dir, s.flags()...)
}

func (s *site) uri(export string) string {
	return "nbd+unix:///" + export + "?socket=" + filepath.Join(s.dir, "nbd.sock")
}

// replToken makes a replication-scoped token on s.
func (s *site) replToken(t *testing.T) string {
	return strings.TrimSpace(s.must(t, "token", "create", "peer", "--scope", "replication"))
}

// proxy forwards TCP to addr, counting the bytes sent toward it; cut
// makes it drop every connection once that count passes a mark.
type proxy struct {
	l      net.Listener
	up     atomic.Int64
	cutAt  atomic.Int64 // 0: never
	mu     sync.Mutex
	conns  []net.Conn
	target string
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.dropAll() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go func() { io.Copy(c, u); c.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			total := p.up.Add(int64(n))
			if at := p.cutAt.Load(); at > 0 && total >= at {
				p.cutAt.Store(0)
				p.dropAll()
				return
			}
			if _, werr := u.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			u.Close()
			return
		}
	}
}

// writeRandom writes n random 64 KiB blocks of a disk of size bytes
// through NBD and flushes; it returns how many distinct blocks it wrote.
func writeRandom(t *testing.T, uri string, rng *rand.Rand, size int64, n int) int {
	t.Helper()
	ctx := context.Background()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	seen := map[int64]bool{}
	for range n {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		off := rng.Int64N(size/int64(len(buf))) * int64(len(buf))
		seen[off] = true
		if err := c.WriteAt(ctx, buf, off, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return len(seen)
}

// compareNBD runs qemu-img compare on two NBD exports.
func compareNBD(t *testing.T, a, b string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare %s %s: %v: %s", a, b, err, out)
	}
}

func (s *site) group(t *testing.T, name string) client.Replication {
	var r client.Replication
	s.jsonOut(t, &r, "replication", "show", name)
	return r
}

func (s *site) replica(t *testing.T, name string) client.Replica {
	var rs []client.Replica
	s.jsonOut(t, &rs, "replication", "replicas")
	for _, r := range rs {
		if r.Group == name {
			return r
		}
	}
	t.Fatalf("no replica %s on %s", name, s.dir)
	return client.Replica{}
}

// checkPoint: the target's point seq is bit-identical to the source
// snapshot of the same cycle.
func checkPoint(t *testing.T, src, dst *site, group, disk, target string, seq uint64) {
	t.Helper()
	compareNBD(t, src.uri(disk+"@rep-"+group+"-"+itoa(seq)), dst.uri(target+"@rp-"+itoa(seq)))
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// waitRecovered waits until a restarted target's replica routes answer:
// its start's rollback ran.
func waitRecovered(t *testing.T, s *site) {
	t.Helper()
	for i := 0; ; i++ {
		if _, code := s.run(t, "replication", "replicas"); code == 0 {
			return
		}
		if i == 100 {
			t.Fatal("the target's replicas never became ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPoint waits for the group's first point.
func waitPoint(t *testing.T, s *site, name string) client.Replication {
	t.Helper()
	for i := 0; ; i++ {
		r := s.group(t, name)
		if r.LastPoint != nil {
			return r
		}
		if i == 300 {
			t.Fatalf("no first point: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func rounds() int {
	if os.Getenv("BLOCKWISE_LONG") == "1" {
		return 10
	}
	return 2
}

// TestReplication: two real hosts over TLS (the target behind a TCP
// proxy that can cut): cycles bit-identical to the source snapshots,
// resume after a network cut with few bytes resent, SIGKILL of either
// host mid-cycle, test failover while replicating, disaster failover,
// split-brain refused then resync, reprotect sending only what changed,
// and a planned migration back (failback).
func TestReplication(t *testing.T) {
	needTools(t, "qemu-img")
	a, b := startSite(t), startSite(t)
	px := startProxy(t, b.addr)
	const size = 64 << 20
	rng := rand.New(rand.NewPCG(seed(t), 1))
	a.must(t, "disk", "create", "vm1", "--size", "64M", "--granularity", "64K")
	writeRandom(t, a.uri("vm1"), rng, size, 200) // ~12 MiB allocated
	tok := b.replToken(t)
	a.must(t, "replication", "create", "g1", "--disk", "vm1", "--target", "https://"+px.l.Addr().String(),
		"--target-token", tok, "--target-ca", b.pki.CACert, "--rpo", "15s", "--compression", "none")
	r := waitPoint(t, a, "g1")              // the initial sync starts at once
	a.must(t, "replication", "pause", "g1") // then the test drives the cycles
	if r.LastPoint == nil || r.LastCycle == nil || !r.LastCycle.Full || r.LastCycle.Bytes > 14<<20 {
		t.Fatalf("initial sync sends allocated areas only: %+v %+v", r.LastPoint, r.LastCycle)
	}
	seq := r.LastPoint.Seq
	checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
	if out, code := b.run(t, "replication", "replicas"); code != 0 || !strings.Contains(out, "g1") {
		t.Fatalf("replicas: %d %s", code, out)
	}
	// The replica is read-only on the target.
	if c, err := nbd.Dial(context.Background(), b.uri("vm1"), nil); err == nil {
		if err := c.WriteAt(context.Background(), make([]byte, 4096), 0, false); err == nil {
			t.Fatal("a replica disk took an NBD write")
		}
		c.Close()
	}

	t.Run("cycles under writes", func(t *testing.T) {
		for range 2 {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); writeRandom(t, a.uri("vm1"), rng, size, 50) }()
			writeRandom(t, a.uri("vm1"), rng, size, 20)
			a.must(t, "replication", "sync", "g1")
			wg.Wait()
			r := a.group(t, "g1")
			if r.LastPoint.Seq != seq+1 || r.LastCycle.Full || r.LastCycle.Bytes > 80<<16 {
				t.Fatalf("cycle: %+v %+v", r.LastPoint, r.LastCycle)
			}
			seq++
			checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
		}
		ac, err := client.New("unix://"+filepath.Join(a.dir, "api.sock"), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tasks, err := ac.ListTasks(context.Background())
		if err != nil || len(tasks) == 0 {
			t.Fatal(tasks, err)
		}
		last := tasks[len(tasks)-1]
		if last.Kind != "replication-sync" || last.State != client.TaskDone || last.Done == 0 || last.Done != last.Total {
			t.Fatalf("sync task progress: %+v", last)
		}
	})

	t.Run("network cut resumes", func(t *testing.T) {
		blocks := writeRandom(t, a.uri("vm1"), rng, size, 300)
		start := px.up.Load()
		px.cutAt.Store(start + 8<<20)
		if out, code := a.run(t, "replication", "sync", "g1"); code == 0 {
			t.Fatalf("sync through a cut connection succeeded: %s", out)
		}
		a.must(t, "replication", "sync", "g1")
		r := a.group(t, "g1")
		seq++
		if r.LastPoint.Seq != seq || !r.LastCycle.Resumed {
			t.Fatalf("after the cut: %+v %+v", r.LastPoint, r.LastCycle)
		}
		changed := r.LastCycle.Bytes // of the resumed attempt; the total is on the proxy
		sent := px.up.Load() - start
		limit := int64(float64(blocks<<16) * 1.1)
		t.Logf("cut: %d bytes through the proxy for %d changed (%d in the resumed part)", sent, blocks<<16, changed)
		if sent > limit {
			t.Fatalf("resume resent too much: %d bytes on the wire > %d", sent, limit)
		}
		checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
	})

	t.Run("SIGKILL source and target mid-cycle", func(t *testing.T) {
		for i := range rounds() {
			for _, victim := range []*site{a, b} {
				writeRandom(t, a.uri("vm1"), rng, size, 300)
				start := px.up.Load()
				cmd := a.command(nil, "replication", "sync", "g1")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				mark := start + int64(1<<20+rng.IntN(10<<20))
				for deadline := time.Now().Add(10 * time.Second); px.up.Load() < mark && time.Now().Before(deadline); {
					time.Sleep(2 * time.Millisecond)
				}
				victim.restart(t, true)
				cmd.Wait()
				if victim == b { // the target rolled back: its live disk is the last point
					waitRecovered(t, b)
					compareNBD(t, b.uri("vm1"), b.uri("vm1@rp-"+itoa(seq)))
				}
				var out string
				for try := 0; ; try++ { // the first try may meet a target still starting
					o, code := a.run(t, "replication", "sync", "g1")
					if code == 0 {
						break
					}
					if out = o; try == 5 {
						t.Fatalf("round %d: sync after the kill: %s", i, out)
					}
					time.Sleep(200 * time.Millisecond)
				}
				r := a.group(t, "g1")
				if r.LastCycle.Full || r.LastPoint.Seq <= seq {
					t.Fatalf("round %d: after the kill: %+v %+v", i, r.LastPoint, r.LastCycle)
				}
				seq = r.LastPoint.Seq
				checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
			}
		}
	})

	t.Run("test failover while replicating", func(t *testing.T) {
		b.must(t, "replication", "failover", "g1", "--test")
		ctx := context.Background()
		c, err := nbd.Dial(ctx, b.uri("vm1-test"), nil)
		if err != nil {
			t.Fatal(err)
		}
		pattern := []byte(strings.Repeat("test", 1024))
		if err := c.WriteAt(ctx, pattern, 4096, false); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(pattern))
		if err := c.ReadAt(ctx, got, 4096); err != nil || string(got) != string(pattern) {
			t.Fatalf("test copy read back: %v", err)
		}
		c.Close()
		writeRandom(t, a.uri("vm1"), rng, size, 10)
		a.must(t, "replication", "sync", "g1")
		seq++
		checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
		b.must(t, "replication", "failover", "g1", "--cleanup")
		if _, err := nbd.Dial(ctx, b.uri("vm1-test"), nil); err == nil {
			t.Fatal("the test copy outlived its cleanup")
		}
	})

	t.Run("disaster failover, split-brain, resync", func(t *testing.T) {
		b.must(t, "replication", "failover", "g1")
		writeRandom(t, b.uri("vm1"), rng, size, 4) // the recovery site runs
		writeRandom(t, a.uri("vm1"), rng, size, 4) // and so does the old one
		out, code := a.run(t, "replication", "sync", "g1")
		if code == 0 || !strings.Contains(a.must(t, "replication", "show", "g1"), "split-brain") {
			t.Fatalf("split-brain not refused: %d %s", code, out)
		}
		if out, code := a.run(t, "replication", "resync", "g1", "--winner", "bogus"); code != exitUsage {
			t.Fatalf("resync --winner bogus: %d %s", code, out)
		}
		a.must(t, "replication", "resync", "g1", "--winner", "source")
		a.must(t, "replication", "sync", "g1")
		seq++
		checkPoint(t, a, b, "g1", "vm1", "vm1", seq)
		if !strings.Contains(b.must(t, "snapshot", "list", "vm1"), "kept-") {
			t.Fatal("the losing side's writes were not kept in a snapshot")
		}
	})

	t.Run("reprotect and failback", func(t *testing.T) {
		b.must(t, "replication", "failover", "g1")
		writeRandom(t, b.uri("vm1"), rng, size, 8) // 512 KiB at the recovery site
		writeRandom(t, a.uri("vm1"), rng, size, 2) // and 128 KiB at the old one: split again
		if _, code := a.run(t, "replication", "sync", "g1"); code == 0 {
			t.Fatal("split-brain not refused")
		}
		a.must(t, "replication", "resync", "g1", "--winner", "target") // this time the recovery site wins
		if c, err := nbd.Dial(context.Background(), a.uri("vm1"), nil); err == nil {
			if err := c.WriteAt(context.Background(), make([]byte, 4096), 0, false); err == nil {
				t.Fatal("the losing side took a write after resync --winner target")
			}
			c.Close()
		}
		tokA := a.replToken(t)
		b.must(t, "replication", "reprotect", "g1", "--target", "https://"+a.addr, "--target-token", tokA,
			"--target-ca", a.pki.CACert, "--rpo", "15s")
		b.must(t, "replication", "pause", "g1")
		b.must(t, "replication", "sync", "g1")
		r := b.group(t, "g1")
		if r.LastCycle == nil || r.LastCycle.Full || r.LastCycle.Bytes > 10<<16 {
			t.Fatalf("reprotect sends only what changed on either side: %+v", r.LastCycle)
		}
		t.Logf("reprotect cycle: %d bytes for 8+2 changed blocks", r.LastCycle.Bytes)
		if !strings.Contains(a.must(t, "snapshot", "list", "vm1"), "kept-") {
			t.Fatal("the old source's own writes were not kept in a snapshot")
		}
		compareNBD(t, b.uri("vm1@rep-g1-"+itoa(r.LastPoint.Seq)), a.uri("vm1@rp-"+itoa(r.LastPoint.Seq)))
		// Failback: a planned migration of the reversed group.
		b.must(t, "replication", "failover", "g1", "--planned")
		writeRandom(t, a.uri("vm1"), rng, size, 1) // the old source is writable again
		b.restart(t, false)                        // and the demoted side stays read-only
		if c, err := nbd.Dial(context.Background(), b.uri("vm1"), nil); err == nil {
			if err := c.WriteAt(context.Background(), make([]byte, 4096), 0, false); err == nil {
				t.Fatal("the demoted side took a write after the planned migration")
			}
			c.Close()
		}
	})
}

// TestReplicationGroupConsistency (to a unix:// target): two disks of
// one group are snapshot at one instant: a writer bumps a counter on disk c1, then on c2, and no
// point shows c2 ahead of c1 or c1 more than one ahead.
func TestReplicationGroupConsistency(t *testing.T) {
	needTools(t, "qemu-img")
	a, b := startSite(t), startSite(t)
	for _, d := range []string{"c1", "c2"} {
		a.must(t, "disk", "create", d, "--size", "4M")
	}
	// The same machine's target over its unix socket: no token needed.
	a.must(t, "replication", "create", "cg", "--disk", "c1", "--disk", "c2", "--target", "unix://"+filepath.Join(b.dir, "api.sock"),
		"--rpo", "15s")
	a.must(t, "replication", "pause", "cg")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c1, err1 := nbd.Dial(ctx, a.uri("c1"), nil)
		c2, err2 := nbd.Dial(ctx, a.uri("c2"), nil)
		if err1 != nil || err2 != nil {
			t.Error(err1, err2)
			return
		}
		defer c1.Close()
		defer c2.Close()
		buf := make([]byte, 512)
		for i := uint64(1); ctx.Err() == nil; i++ {
			encbin.BigEndian.PutUint64(buf, i)
			if c1.WriteAt(ctx, buf, 0, false) != nil || c2.WriteAt(ctx, buf, 0, false) != nil {
				return
			}
		}
	}()
	wg.Add(1)
	go func() { // bulk writes keep c2's snapshot (its flush) slow, widening any gap
		defer wg.Done()
		c, err := nbd.Dial(ctx, a.uri("c2"), nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for i := 0; ctx.Err() == nil; i++ {
			buf[0] = byte(i)
			if c.WriteAt(ctx, buf, int64(1+i%3)<<20, false) != nil {
				return
			}
		}
	}()
	for range 8 { // without the host's group gate, about half the runs see c2 ahead
		a.must(t, "replication", "sync", "cg")
	}
	cancel()
	wg.Wait()
	rep := b.replica(t, "cg")
	if len(rep.Points) < 8 {
		t.Fatalf("points: %+v", rep.Points)
	}
	for _, p := range rep.Points {
		v1, v2 := readCounter(t, b.uri("c1@"+p.Snapshots["c1"])), readCounter(t, b.uri("c2@"+p.Snapshots["c2"]))
		if v2 > v1 || v1 > v2+1 {
			t.Fatalf("point %d: c1=%d c2=%d: not one instant", p.Seq, v1, v2)
		}
		t.Logf("point %d: c1=%d c2=%d", p.Seq, v1, v2)
	}
}

func readCounter(t *testing.T, uri string) uint64 {
	t.Helper()
	ctx := context.Background()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	if err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	return encbin.BigEndian.Uint64(buf)
}

// TestReplicationBadInput: each refusal is a clear error with its exit
// code, and neither host changed (no group on the source, no replica or
// disk on the target). Seeding from an existing target disk sends only
// the blocks that differ.
func TestReplicationBadInput(t *testing.T) {
	needTools(t, "qemu-img")
	a, b := startSite(t), startSite(t)
	rng := rand.New(rand.NewPCG(seed(t), 2))
	a.must(t, "disk", "create", "vm1", "--size", "16M", "--granularity", "64K")
	writeRandom(t, a.uri("vm1"), rng, 16<<20, 100)
	tok := b.replToken(t)
	full := strings.TrimSpace(b.must(t, "token", "create", "admin"))
	otherCA := testcert.New(t)
	// A replication token reaches the replica routes only.
	if out, code := a.run(t, "--host", "https://"+b.addr, "--ca", b.pki.CACert, "--token", tok, "disk", "list"); code != exitUnauthorized || !strings.Contains(out, "scope") {
		t.Errorf("replication token on /v1/disks: exit %d: %s", code, out)
	}
	if out, code := a.run(t, "token", "create", "x", "--scope", "root"); code != exitUsage {
		t.Errorf("unknown scope: exit %d: %s", code, out)
	}
	tgt := "https://" + b.addr
	base := []string{"replication", "create", "g", "--disk", "vm1", "--rpo", "1m"}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown target", []string{"--target", "https://" + freeAddr(t), "--target-token", tok, "--target-ca", b.pki.CACert}, exitFailure, "connection refused"},
		{"wrong token", []string{"--target", tgt, "--target-token", "bw_wrong", "--target-ca", b.pki.CACert}, exitUnauthorized, "token"},
		{"unscoped token", []string{"--target", tgt, "--target-token", full, "--target-ca", b.pki.CACert}, exitUnauthorized, "scope"},
		{"wrong CA", []string{"--target", tgt, "--target-token", tok, "--target-ca", otherCA.CACert}, exitFailure, "certificate"},
		{"rpo too short", []string{"--target", tgt, "--target-token", tok, "--target-ca", b.pki.CACert, "--rpo", "5s"}, exitUsage, "out of range"},
		{"rpo too long", []string{"--target", tgt, "--target-token", tok, "--target-ca", b.pki.CACert, "--rpo", "25h"}, exitUsage, "out of range"},
		{"no such source disk", []string{"--target", tgt, "--target-token", tok, "--target-ca", b.pki.CACert, "--disk", "nope"}, exitNotFound, "nope"},
		{"bad target URL", []string{"--target", "ftp://x", "--target-token", tok}, exitUsage, "https://HOST:PORT"},
	}
	for _, c := range cases {
		out, code := a.run(t, append(append([]string(nil), base...), c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d (want %d): %s", c.name, code, c.code, out)
		}
	}
	// A target disk of another size, and one that exists without --seed.
	b.must(t, "disk", "create", "vm1", "--size", "8M")
	ok := append(append([]string(nil), base...), "--target", tgt, "--target-token", tok, "--target-ca", b.pki.CACert)
	if out, code := a.run(t, append(ok, "--seed")...); code != exitUsage || !strings.Contains(out, "8388608") {
		t.Errorf("target disk of another size: exit %d: %s", code, out)
	}
	if out, code := a.run(t, ok...); code != exitBusy || !strings.Contains(out, "--seed") {
		t.Errorf("existing target disk without --seed: exit %d: %s", code, out)
	}
	var groups []client.Replication
	a.jsonOut(t, &groups, "replication", "list")
	var replicas []client.Replica
	b.jsonOut(t, &replicas, "replication", "replicas")
	if len(groups) != 0 || len(replicas) != 0 {
		t.Fatalf("a refused create changed something: %+v %+v", groups, replicas)
	}
	if snaps := b.must(t, "snapshot", "list", "vm1"); strings.Contains(snaps, "rp-") {
		t.Fatalf("a refused create snapshotted the target disk: %s", snaps)
	}

	// Seeding: the target disk holds the source's data but 3 blocks.
	b.must(t, "disk", "rm", "vm1")
	b.must(t, "disk", "create", "vm1", "--size", "16M")
	if out, err := exec.Command("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", a.uri("vm1"), b.uri("vm1")).CombinedOutput(); err != nil {
		t.Fatalf("copy the seed: %v %s", err, out)
	}
	blocks := writeRandom(t, a.uri("vm1"), rng, 16<<20, 3)
	a.must(t, append(ok, "--seed")...)
	r := waitPoint(t, a, "g")
	if r.LastCycle == nil || r.LastCycle.Bytes != int64(blocks)<<16 {
		t.Fatalf("seeded sync sent %+v for %d changed blocks", r.LastCycle, blocks)
	}
	checkPoint(t, a, b, "g", "vm1", "vm1", r.LastPoint.Seq)

	// A group removed and made again meets its old replica: refused
	// without --seed, continued from its last point with it.
	a.must(t, "replication", "rm", "g")
	if out, code := a.run(t, ok...); code != exitBusy || !strings.Contains(out, "--seed") {
		t.Fatalf("re-create over an old replica: exit %d: %s", code, out)
	}
	blocks = writeRandom(t, a.uri("vm1"), rng, 16<<20, 2)
	a.must(t, append(ok, "--seed")...)
	r2 := waitPoint(t, a, "g")
	if r2.LastPoint.Seq != r.LastPoint.Seq+1 || r2.LastCycle.Bytes != int64(blocks)<<16 {
		t.Fatalf("re-seeded group: point %d after %d, %d bytes for %d blocks", r2.LastPoint.Seq, r.LastPoint.Seq, r2.LastCycle.Bytes, blocks)
	}
	checkPoint(t, a, b, "g", "vm1", "vm1", r2.LastPoint.Seq)
}

// TestReplicationRPOAndRetention: the bandwidth limit slows a cycle, the
// target keeps --keep points (their snapshots deleted), a paused group
// turns rpo-violated once its last point is older than the RPO (state,
// event, /metrics), and a replica disk cannot be deleted on the target.
func TestReplicationRPOAndRetention(t *testing.T) {
	needTools(t, "qemu-img")
	a, b := startSite(t), startSite(t)
	rng := rand.New(rand.NewPCG(seed(t), 3))
	a.must(t, "disk", "create", "vm1", "--size", "16M", "--granularity", "64K")
	writeRandom(t, a.uri("vm1"), rng, 16<<20, 48) // ~3 MiB
	tok := b.replToken(t)
	a.must(t, "replication", "create", "g", "--disk", "vm1", "--target", "https://"+b.addr, "--target-token", tok,
		"--target-ca", b.pki.CACert, "--rpo", "15s", "--keep", "2", "--bwlimit", "1000000", "--compression", "none")
	r := waitPoint(t, a, "g")
	a.must(t, "replication", "pause", "g")
	if min := 0.9 * float64(r.LastCycle.WireBytes-1<<20) / 1e6; r.LastCycle.Seconds < min { // a 1 MiB burst, then 1 MB/s
		t.Fatalf("a %d-byte cycle at 1 MB/s took %.2fs", r.LastCycle.WireBytes, r.LastCycle.Seconds)
	}
	for range 3 {
		writeRandom(t, a.uri("vm1"), rng, 16<<20, 2)
		a.must(t, "replication", "sync", "g")
	}
	rep := b.replica(t, "g")
	snaps := b.must(t, "snapshot", "list", "vm1")
	if len(rep.Points) != 2 || strings.Count(snaps, "rp-") != 3 { // two points and the base
		t.Fatalf("keep 2: %d points, snapshots:\n%s", len(rep.Points), snaps)
	}
	if out, code := b.run(t, "disk", "rm", "vm1"); code != exitBusy {
		t.Fatalf("deleting a replica disk: exit %d: %s", code, out)
	}
	for i := 0; ; i++ {
		r = a.group(t, "g")
		if r.State == "rpo-violated" && strings.Contains(strings.Join(r.Events, "\n"), "RPO 15s violated") {
			break // the event comes from the scheduler's next tick
		}
		if i == 250 {
			t.Fatalf("no RPO violation after %.0fs: %+v", r.LastPointAge, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(strings.Join(r.Events, "\n"), "RPO 15s violated") {
		t.Fatalf("no RPO event: %v", r.Events)
	}
	body := metrics(t, a)
	for _, m := range []string{`blockwise_replication_rpo_violations_total{group="g"} 1`, `blockwise_replication_state{group="g",state="rpo-violated"} 1`,
		`blockwise_replication_last_point_age_seconds{group="g"}`, `blockwise_replication_cycle_bytes{group="g"}`} {
		if !strings.Contains(body, m) {
			t.Errorf("source /metrics lacks %s", m)
		}
	}
	body = metrics(t, b)
	for _, m := range []string{`blockwise_replica_points{group="g"} 2`, `blockwise_replica_state{group="g",state="ok"} 1`,
		`blockwise_replica_last_point_age_seconds{group="g"}`} {
		if !strings.Contains(body, m) {
			t.Errorf("target /metrics lacks %s", m)
		}
	}
}

// metrics is a host's /metrics, over its unix socket.
func metrics(t *testing.T, s *site) string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", filepath.Join(s.dir, "api.sock"))
	}}}
	resp, err := hc.Get("http://blockwise/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

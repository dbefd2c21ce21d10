package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/client"
)

// TestReplicationRootMismatch: two real hosts; a point's root on the
// target equals the source snapshot's; then the target's copy of a
// block rots on disk (its tree rebuilt from the rotten data after a
// restart), and the next point is refused: typed error on the source
// (event), counted on the target, the point not listed.
func TestReplicationRootMismatch(t *testing.T) {
	a, b := startSite(t), startSite(t)
	rng := rand.New(rand.NewPCG(seed(t), 7))
	a.must(t, "disk", "create", "vm1", "--size", "16M", "--granularity", "64K")
	writeRandom(t, a.uri("vm1"), rng, 16<<20, 16)
	tok := b.replToken(t)
	a.must(t, "replication", "create", "g", "--disk", "vm1", "--target", "https://"+b.addr, "--target-token", tok,
		"--target-ca", b.pki.CACert, "--rpo", "1h")
	r := waitPoint(t, a, "g")
	a.must(t, "replication", "pause", "g")
	var src, dst client.Snapshot
	a.jsonOut(t, &src, "snapshot", "show", "vm1", "rep-g-"+itoa(r.LastPoint.Seq))
	b.jsonOut(t, &dst, "snapshot", "show", "vm1", "rp-"+itoa(r.LastPoint.Seq))
	if src.Root == "" || src.Root != dst.Root {
		t.Fatalf("point %d: source root %q, target %q", r.LastPoint.Seq, src.Root, dst.Root)
	}

	// Rot: the first allocated block of the replica, in every layer file.
	var ch client.ChangedAreas
	a.jsonOut(t, &ch, "changes", "vm1", "--snapshot", src.ID, "--since", "*")
	rot := ch.ChangedArea[0].Start
	sigterm(t, b.serveProc)
	files, _ := filepath.Glob(filepath.Join(b.dir, "vm1", "*.raw"))
	for _, f := range files {
		fh, err := os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteAt([]byte(strings.Repeat("rot!", 1024)), rot)
		fh.Close()
	}
	os.RemoveAll(filepath.Join(b.dir, "vm1", "trees")) // rebuilt from the data (T4)
	b.serveProc = startServeIn(b.top, b.dir, b.flags()...)
	waitRecovered(t, b)

	writeRandom(t, a.uri("vm1"), rng, 16<<20, 2)
	a.must(t, "replication", "resume", "g")
	out, code := a.run(t, "replication", "sync", "g")
	if code == 0 || !strings.Contains(out, "root") {
		t.Fatalf("sync over a rotten replica: exit %d: %s", code, out)
	}
	if g := a.group(t, "g"); !strings.Contains(strings.Join(g.Events, "\n"), "refused by the target") || g.LastPoint.Seq != r.LastPoint.Seq {
		t.Fatalf("group after a refused point: %+v", g)
	}
	if rep := b.replica(t, "g"); len(rep.Points) != 1 {
		t.Fatalf("the refused point is listed: %+v", rep.Points)
	}
	if m := metrics(t, b); !strings.Contains(m, `blockwise_replica_root_mismatches_total{group="g"}`) ||
		strings.Contains(m, `blockwise_replica_root_mismatches_total{group="g"} 0`) {
		t.Fatalf("target metrics lack the mismatch")
	}
}

package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// consoleReplication (TestConsolePages' "replication") drives the
// replication pages of two real hosts: the console's host A replicates a
// disk to B, a second `blockwise serve` (TCP+TLS, through B's replication
// token and CA). A's page shows the group's target, state and lag, and
// "Sync now" from it makes a new point (A's API) that the page shows
// without a reload. B's page, in the same browser (another origin:
// localhost instead of 127.0.0.1, so both sessions live), shows the
// replica with A's points; a test failover started there shows its
// export without a reload (B's API) and the export reads as A's snapshot
// of the latest point (qemu-img compare); a disaster failover asks for
// confirmation and a cancel changes nothing; "End test" from the page
// removes the export; A's session still holds after. A failover without the CSRF token is refused, and
// neither host's replication data holds the token A keeps for B nor a
// console token.
func consoleReplication(t *testing.T, ctx context.Context, e *e2e, base, secretA string) {
	b := startSite(t)
	e.must(t, "disk", "create", "rv1", "--size", "4M", "--granularity", "64K")
	e.apply(t, "rv1", randomWrites(repotest.Rand(seed(t)), 4<<20, 10, 256<<10))
	peer := b.replToken(t)
	e.must(t, "replication", "create", "g1", "--disk", "rv1:rv1r", "--target", "https://"+b.addr, "--target-token", peer,
		"--target-ca", b.pki.CACert, "--rpo", "15m")
	var r client.Replication
	for deadline := time.Now().Add(30 * time.Second); r.LastPoint == nil; time.Sleep(100 * time.Millisecond) {
		if e.jsonOut(t, &r, "replication", "show", "g1"); time.Now().After(deadline) {
			t.Fatalf("no first point: %+v", r)
		}
	}
	seq := r.LastPoint.Seq
	secretB := strings.TrimSpace(b.must(t, "token", "create", "browser"))
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	// A, the source: the pair's target, state and lag; no replica.
	group := `tr[data-group="g1"]`
	step(t, ctx, "A's replication page", chromedp.Navigate(base+"/#/replication"), chromedp.WaitVisible(css(group+" td.lag")))
	if st, target := textOf(t, ctx, css(group+" td.state")), textOf(t, ctx, css(group+" td:nth-child(3)")); st != "ok" || target != "https://"+b.addr {
		t.Fatalf("A shows state %q, target %q", st, target)
	}
	if lag := textOf(t, ctx, css(group+" td.lag")); !regexp.MustCompile(`^\d+(\.\d)? (s|min) \(RPO 15m0s\)$`).MatchString(lag) {
		t.Fatalf("A shows the lag as %q", lag)
	}
	if rows := evalJS[int](t, ctx, `document.querySelectorAll("tr[data-replica]").length`); rows != 0 {
		t.Fatalf("A shows %d replicas: it keeps none", rows)
	}
	noSecretIn(t, ctx, []string{"/console/api/replication", "/v1/replications", "/v1/replications/g1"}, peer, secretA, secretB)
	// Sync now from the page: a new point, shown without a reload.
	e.apply(t, "rv1", randomWrites(repotest.Rand(seed(t)+3), 4<<20, 2, 256<<10))
	evalJS[any](t, ctx, `window.__sameDocument = 1`)
	clickNow(t, ctx, group+" button.sync")
	seq++
	pageHolds(t, ctx, "A shows the synced point", `(document.querySelector('`+group+` td:nth-child(5)')||{textContent:""}).textContent.startsWith("#`+itoa(seq)+` ")`)
	if e.jsonOut(t, &r, "replication", "show", "g1"); r.LastPoint.Seq != seq || evalJS[int](t, ctx, `window.__sameDocument || 0`) != 1 {
		t.Fatalf("after Sync now: A's API says %+v (or the page reloaded)", r.LastPoint)
	}

	// B, the target: the replica and its points; no group.
	baseB := "https://" + strings.Replace(b.addr, "127.0.0.1", "localhost", 1)
	consoleLogin(t, ctx, baseB, secretB)
	replica := `tr[data-replica="g1"]`
	step(t, ctx, "B's replication page", chromedp.Navigate(baseB+"/#/replication"), chromedp.WaitVisible(css(replica+" button.test-failover")))
	rep := b.replica(t, "g1")
	if n, latest := textOf(t, ctx, css(replica+" td.num")), textOf(t, ctx, css(replica+" td:nth-child(5)")); n != itoa(uint64(len(rep.Points))) ||
		!strings.HasPrefix(latest, "#"+itoa(seq)+" ") || textOf(t, ctx, css(replica+" td.state")) != "ok" {
		t.Fatalf("B shows %s points, latest %q; its API: %+v", n, latest, rep)
	}
	if rows := evalJS[int](t, ctx, `document.querySelectorAll("tr[data-group]").length`); rows != 0 {
		t.Fatalf("B shows %d groups: it is the source of none", rows)
	}
	noSecretIn(t, ctx, []string{"/console/api/replication", "/v1/replicas"}, peer, secretA, secretB)
	if st := csrfStatus(t, ctx, "POST", "/v1/replicas/g1/failover", `{"mode":"test"}`); st != 403 {
		t.Fatalf("test failover without CSRF token: %d", st)
	}
	// A test failover from B's page: its export shows live, B's API has
	// it, and it reads as A's snapshot of the same point.
	evalJS[any](t, ctx, `window.__sameDocument = 1`)
	clickNow(t, ctx, replica+" button.test-failover")
	pageHolds(t, ctx, "test export shown", `(document.querySelector('`+replica+` td.tests')||{}).textContent === "rv1r: rv1r-test"`)
	if st := textOf(t, ctx, css(replica+" td.state")); st != "ok, testing" || evalJS[int](t, ctx, `window.__sameDocument || 0`) != 1 {
		t.Fatalf("replica state %q, or the page reloaded", st)
	}
	if rep = b.replica(t, "g1"); rep.Tests["rv1r"] != "rv1r-test" {
		t.Fatalf("B's replicas after the test failover: %+v", rep)
	}
	compareNBD(t, e.uri("rv1@rep-g1-"+itoa(seq)), b.uri("rv1r-test"))
	// A disaster failover asks first; a cancel changes nothing.
	clickNow(t, ctx, replica+" button.failover")
	step(t, ctx, "failover asks", chromedp.WaitVisible(css("#confirm-no")))
	clickNow(t, ctx, "#confirm-no")
	step(t, ctx, "failover canceled", chromedp.WaitNotVisible(css("#confirm")))
	clickNow(t, ctx, replica+" button.test-cleanup")
	pageHolds(t, ctx, "test ended", `(document.querySelector('`+replica+` td.state')||{}).textContent === "ok"`)
	if rep = b.replica(t, "g1"); len(rep.Tests) != 0 || rep.State != "ok" {
		t.Fatalf("B's replicas after cleanup and a canceled failover: %+v\nmessage %q", rep,
			evalJS[string](t, ctx, `document.getElementById("repl-msg").textContent`))
	}
	e.must(t, "replication", "rm", "g1")
	// A's session lived on beside B's: the next pages are A's again.
	step(t, ctx, "back to A", chromedp.Navigate(base+"/#/"), chromedp.WaitVisible(css("#ov-disks")))
}

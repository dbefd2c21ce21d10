package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
)

// TestLeaseCLI drives `blockwise lease` against a real `blockwise serve`:
// acquire, show, renew, release, a takeover after the holder stopped its
// heartbeat, and the refusals (held, wrong owner or generation token,
// misaligned offset, snapshot, unknown disk) with their exit codes.
func TestLeaseCLI(t *testing.T) {
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "8M")
	var rec client.LeaseRecord
	d.jsonOut(t, &rec, "lease", "acquire", "vm", "4096", "--owner", "a", "--ttl", "1s")
	if !rec.Held || rec.Owner != "a" || rec.Generation != 1 || rec.TTL != time.Second {
		t.Fatalf("acquired %+v", rec)
	}
	refuse := func(code int, args ...string) {
		t.Helper()
		if out, got := d.run(t, args...); got != code {
			t.Fatalf("%v: exit %d, want %d: %s", args, got, code, out)
		}
	}
	refuse(exitBusy, "lease", "acquire", "vm", "4096", "--owner", "b")
	if out := d.must(t, "lease", "show", "vm", "4096"); !strings.Contains(out, "held") || !strings.Contains(out, "generation  1") {
		t.Fatalf("show: %s", out)
	}
	d.jsonOut(t, &rec, "lease", "renew", "vm", "4096", "--owner", "a", "--generation", "1")
	if rec.Heartbeat != 1 || rec.Generation != 1 {
		t.Fatalf("renewed %+v", rec)
	}
	refuse(exitBusy, "lease", "renew", "vm", "4096", "--owner", "a", "--generation", "7") // a wrong token
	refuse(exitBusy, "lease", "release", "vm", "4096", "--owner", "b")                    // not b's
	// a stops beating: b takes over once a's heartbeat stood still 1s.
	start := time.Now()
	d.jsonOut(t, &rec, "lease", "acquire", "vm", "4096", "--owner", "b", "--ttl", "1s", "--wait", "10s")
	if rec.Owner != "b" || rec.Generation != 2 || time.Since(start) < time.Second {
		t.Fatalf("takeover %+v after %v", rec, time.Since(start))
	}
	refuse(exitBusy, "lease", "renew", "vm", "4096", "--owner", "a")
	d.jsonOut(t, &rec, "lease", "release", "vm", "4096", "--owner", "b", "--generation", "2")
	if rec.Held || rec.Generation != 3 {
		t.Fatalf("released %+v", rec)
	}
	refuse(exitUsage, "lease", "show", "vm", "100")
	refuse(exitUsage, "lease", "acquire", "vm", "0")
	refuse(exitUsage, "lease", "acquire", "vm@s1", "0", "--owner", "a")
	refuse(exitUsage, "lease", "show", "vm", "8388608") // past the end
	refuse(exitNotFound, "lease", "show", "nope", "0")
}

// TestDatastoreCLI: `blockwise datastore` shows the space and offloads;
// above --space-warn the warning is in its answer and in the host's log;
// a threshold outside (0, 100] is a usage error.
func TestDatastoreCLI(t *testing.T) {
	for _, bad := range []string{"150", "0", "-5"} {
		if out, code := (&cli{dir: t.TempDir()}).run(t, "serve", "--space-warn", bad); code != exitUsage {
			t.Fatalf("serve --space-warn %s: exit %d: %s", bad, code, out)
		}
	}
	d := startServe(t, "--space-warn", "0.0001", "--space-check", "50ms")
	d.must(t, "disk", "create", "vm", "--size", "1T")
	var hi client.HostInfo
	d.jsonOut(t, &hi, "datastore")
	if hi.Space == nil || hi.Space.Provisioned != 1<<40 || hi.Space.Warning == "" || hi.Offload == nil || hi.Offload.CompareAndWriteMax != 4096 {
		t.Fatalf("datastore %+v %+v", hi.Space, hi.Offload)
	}
	if out := d.must(t, "datastore"); !strings.Contains(out, "overcommit") || !strings.Contains(out, "compare-and-write") {
		t.Fatalf("datastore: %s", out)
	}
	time.Sleep(200 * time.Millisecond)
	sigterm(t, d)
	if log := d.stderr.String(); !strings.Contains(log, "datastore space above threshold") {
		t.Fatalf("no warning in the log:\n%s", log)
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestPolicyKillInterrupted drives policies and jobs through the real
// CLI and `blockwise serve`: a policy's backup is running when the host
// is SIGKILLed; the restarted host shows the job interrupted (never
// running), the repository checks clean, the next run succeeds and its
// point restores to the disk's bytes; job log, show, list and cancel
// answer as documented.
func TestPolicyKillInterrupted(t *testing.T) {
	e := newE2E(t, true)
	e.must(t, "disk", "create", "vm1", "--size", "16M", "--granularity", "64K")
	e.apply(t, "vm1", randomWrites(repotest.Rand(seed(t)), 16<<20, 40, 1<<20))
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("correct horse\n"), 0o600)
	out := e.must(t, "policy", "create", "nightly", "--disk", "vm1", "--schedule", "0 3 * * *", "--time-zone", "America/New_York",
		"--repo", e.repo, "--password-file", pw, "--keep-last", "3", "--limit-upload", "1024")
	if !strings.Contains(out, "policy nightly") || strings.Contains(out, "correct horse") {
		t.Fatalf("create printed %s", out)
	}
	if _, code := e.run(t, "policy", "create", "nightly", "--disk", "vm1", "--schedule", "@daily", "--repo", e.repo, "--password-file", pw); code != exitBusy {
		t.Fatalf("duplicate create: exit %d", code)
	}
	if _, code := e.run(t, "policy", "create", "bad", "--disk", "vm1", "--schedule", "every tuesday", "--repo", e.repo, "--password-file", pw); code != exitUsage {
		t.Fatalf("bad schedule: exit %d", code)
	}
	var run client.PolicyRun
	e.jsonOut(t, &run, "policy", "run", "nightly")
	if len(run.Jobs) != 1 {
		t.Fatalf("run %+v", run)
	}
	id := run.Jobs[0]
	for i := 0; ; i++ { // until the copy is under way
		var j client.Job
		e.jsonOut(t, &j, "job", "show", id)
		if j.State == "running" && j.Progress.Stage == "copy" && j.Progress.Done > 0 {
			break
		}
		if i == 200 || j.Done() {
			t.Fatalf("job never copied: %+v", j)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.d.cmd.Process.Signal(syscall.SIGKILL)
	e.d.cmd.Wait()
	e.d = startServeIn(t, e.d.dir)

	var j client.Job
	e.jsonOut(t, &j, "job", "show", id)
	if j.State != "interrupted" || j.Ended == nil || j.Error == "" {
		t.Fatalf("after SIGKILL: %+v", j)
	}
	if out, code := e.run(t, "job", "cancel", id); code != exitFailure || !strings.Contains(out, "already ended") {
		t.Fatalf("cancel of an ended job: exit %d: %s", code, out)
	}
	if _, code := e.run(t, "job", "show", "job-424242"); code != exitNotFound {
		t.Fatalf("unknown job: exit %d", code)
	}
	e.must(t, "check", "--read-data")
	e.must(t, "policy", "edit", "nightly", "--limit-upload", "0", "--retries", "1")
	var ended []client.Job
	e.jsonOut(t, &ended, "policy", "run", "nightly", "--wait")
	if len(ended) != 1 || ended[0].State != "succeeded" || ended[0].Attempt != 1 {
		t.Fatalf("next run %+v", ended)
	}
	var sum backupSummary
	if err := json.Unmarshal(ended[0].Summary, &sum); err != nil || sum.ID == "" {
		t.Fatalf("summary %s: %v", ended[0].Summary, err)
	}
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm1", ref)
	e.restoreEquals(t, sum.ID, ref)
	log := e.must(t, "job", "log", "-f", ended[0].ID)
	if !strings.Contains(log, "point "+sum.ID[:8]) {
		t.Fatalf("job log: %s", log)
	}
	// log -f follows a job from its start until it ends.
	e.apply(t, "vm1", randomWrites(repotest.Rand(seed(t)), 16<<20, 5, 256<<10))
	e.jsonOut(t, &run, "policy", "run", "nightly")
	follow := e.must(t, "job", "log", "-f", run.Jobs[0])
	if !strings.Contains(follow, "queued by run now") || !strings.Contains(follow, "incremental") {
		t.Fatalf("job log -f: %s", follow)
	}
	e.jsonOut(t, &j, "job", "show", run.Jobs[0])
	if j.State != "succeeded" {
		t.Fatalf("followed job: %+v", j)
	}
	list := e.must(t, "job", "list", "--policy", "nightly")
	if !strings.Contains(list, "interrupted") || !strings.Contains(list, "succeeded") {
		t.Fatalf("job list: %s", list)
	}
	show := e.must(t, "policy", "show", "nightly")
	if !strings.Contains(show, "vm1") || !strings.Contains(show, "succeeded") || !strings.Contains(show, "key held in memory") {
		t.Fatalf("policy show: %s", show)
	}
	if ls := e.must(t, "policy", "list"); !strings.Contains(ls, "nightly") || !strings.Contains(ls, "0 3 * * *") {
		t.Fatalf("policy list: %s", ls)
	}
	e.must(t, "policy", "rm", "nightly")
	if _, code := e.run(t, "policy", "show", "nightly"); code != exitNotFound {
		t.Fatalf("removed policy: exit %d", code)
	}
}

// TestDiskLabelsCLI: blockwise disk label sets, removes and replaces
// labels; disk list --selector and disk info show them; a policy made
// with --label selects the labelled disks (policy show); bad labels and
// selectors are usage errors.
func TestDiskLabelsCLI(t *testing.T) {
	e := newE2E(t, true)
	for _, n := range []string{"db1", "db2", "web1"} {
		e.must(t, "disk", "create", n, "--size", "1M")
	}
	if out := e.must(t, "disk", "label", "db1", "tier=gold", "env=prod"); !strings.Contains(out, "env=prod,tier=gold") {
		t.Fatalf("label db1: %s", out)
	}
	e.must(t, "disk", "label", "db2", "tier=gold", "env=dev")
	e.must(t, "disk", "label", "web1", "tier=bronze")
	if out := e.must(t, "disk", "label", "web1", "tier-", "role=web"); !strings.Contains(out, "disk web1: role=web") {
		t.Fatalf("remove a label: %s", out)
	}
	for _, bad := range [][]string{{"disk", "label", "db1", "tier"}, {"disk", "label", "db1", "k=<b>"}, {"disk", "label", "db1"},
		{"disk", "list", "--selector", "tier=gold,"}} {
		if out, code := e.run(t, bad...); code != exitUsage {
			t.Errorf("%v: exit %d: %s", bad, code, out)
		}
	}
	var gold []client.Disk
	e.jsonOut(t, &gold, "disk", "list", "--selector", "tier=gold,env!=dev")
	if len(gold) != 1 || gold[0].Name != "db1" || gold[0].Labels["env"] != "prod" {
		t.Fatalf("list --selector: %+v", gold)
	}
	if out := e.must(t, "disk", "list", "-l", "tier"); !strings.Contains(out, "db2") || strings.Contains(out, "web1") || !strings.Contains(out, "LABELS") {
		t.Fatalf("list -l tier: %s", out)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("correct horse\n"), 0o600)
	e.must(t, "policy", "create", "gold", "--label", "tier=gold,env!=dev", "--label", "role=web", "--schedule", "@daily",
		"--repo", e.repo, "--password-file", pw)
	out := e.must(t, "policy", "show", "gold")
	for _, want := range []string{"label:tier=gold,env!=dev", "  db1 ", "  web1 "} {
		if !strings.Contains(out, want) {
			t.Fatalf("policy show lacks %q: %s", want, out)
		}
	}
	if strings.Contains(out, "  db2 ") {
		t.Fatalf("policy show selects db2: %s", out)
	}
	e.must(t, "disk", "label", "db1", "--replace")
	if out := e.must(t, "disk", "info", "db1"); !regexp.MustCompile(`(?m)^labels +-$`).MatchString(out) {
		t.Fatalf("info: %s", out)
	}
	if out := e.must(t, "policy", "show", "gold"); strings.Contains(out, "  db1 ") {
		t.Fatalf("db1 still selected after its labels went: %s", out)
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// TestE2ERecoverHost: recover without --overlay has the host run the
// recovery as a job (POST /v1/recoveries) while a guest writes to its
// socket. The host is killed with SIGKILL mid-copy: restarted, the job
// shows interrupted, the recovery is listed resumable, and recover
// --resume continues it: the export equals the model of every write the
// guest saw flushed, the copy switches, and the new disk equals the
// model. Canceling the job after the switch ends it succeeded and
// removes the recovery. Bad requests come back as typed problems.
func TestE2ERecoverHost(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	const size = 16 << 20
	r := e.recoveryRig(t, size, 41, "3")
	if out, code := e.run(t, "recover", r.id, "--to-disk", "new"); code != exitNotFound {
		t.Errorf("recover on a host without --points-repo: exit %d, want %d: %s", code, exitNotFound, out)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostArgs := []string{"--points-repo", e.repo, "--points-password-file", pw}
	e.d.cmd.Process.Signal(syscall.SIGTERM)
	e.d.cmd.Wait()
	e.d = startServeIn(t, e.d.dir, hostArgs...)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"recover", r.id, "--to-disk", "../x"}, exitUsage},
		{[]string{"recover", "0123456789ab", "--to-disk", "x"}, exitNotFound},
		{[]string{"recover", "--to-disk", "x", "--resume"}, exitNotFound},
		{[]string{"recover", r.id, "--to-disk", "x", "--socket", "/tmp/x.sock"}, exitUsage},
		{[]string{"recover", r.id, "--to-disk", "vm"}, exitBusy}, // an existing disk
	} {
		if out, code := e.run(t, c.args...); code != c.code {
			t.Errorf("%v: exit %d, want %d: %s", c.args, code, c.code, out)
		}
	}
	var rec wire.Recovery
	e.jsonOut(t, &rec, "recover", r.id, "--to-disk", "new", "--rate-mb", "3")
	if rec.Job == "" || rec.Phase != "copying" || !strings.HasPrefix(rec.URI, "nbd+unix:///") {
		t.Fatalf("recovery: %+v", rec)
	}
	if out, code := e.run(t, "recover", r.id, "--to-disk", "new"); code != exitBusy || !strings.Contains(out, "being recovered") {
		t.Errorf("a second recovery into the same disk: exit %d: %s", code, out)
	}
	g := newGuestWriter(t, seed(t), size, r.model)
	g.start(rec.URI)
	waitJob(t, e.d.dir, rec.Job, func(j wire.Job) bool { return j.Progress.Done > 0 && j.Progress.Total == size })
	time.Sleep(500 * time.Millisecond)
	g.mu.Lock()
	errs := g.errs
	g.mu.Unlock()
	if errs > 0 {
		t.Fatalf("%d guest write batches failed through the host's export", errs)
	}
	e.d.cmd.Process.Kill() // kill -9 of the host mid-copy, the guest writing
	e.d.cmd.Wait()
	g.pause()
	e.d = startServeIn(t, e.d.dir, hostArgs...)
	if j := getJob(t, e.d.dir, rec.Job); j.State != wire.JobInterrupted {
		t.Fatalf("the job after kill -9 of the host: %s, want interrupted", j.State)
	}
	var list []wire.Recovery
	if err := json.Unmarshal(apiOK(t, e.d.dir, "/v1/recoveries"), &list); err != nil || len(list) != 1 || list[0].Job != "" || list[0].Phase != "copying" {
		t.Fatalf("recoveries after the restart: %+v %v", list, err)
	}
	var res wire.Recovery
	e.jsonOut(t, &res, "recover", "--to-disk", "new", "--resume")
	if res.URI != rec.URI || res.Job == rec.Job {
		t.Fatalf("resumed recovery: %+v, was %+v", res, rec)
	}
	g.settle(t, res.URI)
	equalsModel(t, res.URI, r.model) // nothing the guest saw flushed was lost
	g.start(res.URI)
	waitJob(t, e.d.dir, res.Job, func(j wire.Job) bool { return j.Progress.Stage == "switched" })
	time.Sleep(300 * time.Millisecond) // writes after the switch, through the same socket
	g.pause()
	g.settle(t, res.URI)
	equalsModel(t, res.URI, r.model)
	equalsModel(t, e.uri("new"), r.model)
	e.must(t, "job", "cancel", res.Job)
	if j := waitJob(t, e.d.dir, res.Job, wire.Job.Done); j.State != wire.JobSucceeded {
		t.Fatalf("the job canceled after the switch: %s %s", j.State, j.Error)
	}
	if _, err := os.Stat(filepath.Join(e.d.dir, "recoveries", "new")); !os.IsNotExist(err) {
		t.Errorf("the recovery's directory is left after it ended: %v", err)
	}
	// --wait follows the job to the switch.
	out := e.must(t, "recover", r.id, "--to-disk", "new2", "--wait")
	if !strings.Contains(out, "switched to the new disk; job ") {
		t.Fatalf("recover --wait: %s", out)
	}
	var jobs []wire.Recovery
	if err := json.Unmarshal(apiOK(t, e.d.dir, "/v1/recoveries"), &jobs); err != nil || len(jobs) != 1 || jobs[0].Phase != "switched" || jobs[0].Job == "" {
		t.Fatalf("recoveries after recover --wait: %+v %v", jobs, err)
	}
	e.must(t, "job", "cancel", jobs[0].Job)
	waitJob(t, e.d.dir, jobs[0].Job, wire.Job.Done)
	equalsModel(t, e.uri("new2"), readModel(t, r.ref))
	e.restoreEquals(t, r.id, r.ref) // the backup is never modified
}

func getJob(t *testing.T, dir, id string) wire.Job {
	t.Helper()
	var j wire.Job
	if err := json.Unmarshal(apiOK(t, dir, "/v1/jobs/"+id), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// waitJob polls the job until ok (at most 2 minutes).
func waitJob(t *testing.T, dir, id string, ok func(wire.Job) bool) wire.Job {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j := getJob(t, dir, id)
		if ok(j) {
			return j
		}
		if time.Now().After(deadline) || (j.Done() && !ok(j)) {
			t.Fatalf("job %s: %+v", id, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func apiOK(t *testing.T, dir, path string) []byte {
	t.Helper()
	code, _, body := apiGet(t, dir, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

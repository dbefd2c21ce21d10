package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/daemon"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
)

const (
	mib      = 1 << 20
	password = "correct horse battery staple 7f3a"
)

// host is a real blockwise host (daemon) with the scheduler registered,
// on a short temporary datastore.
type host struct {
	dir  string
	d    *daemon.Daemon
	s    *Scheduler
	c    *client.Client
	logs *syncBuffer
	stop func()
	sock string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "bwsch") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startHost serves dir until the test ends (or h.stop).
func startHost(t *testing.T, dir string, o Options) *host {
	t.Helper()
	h := &host{dir: dir, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := daemon.New(daemon.Options{Datastore: dir, ShutdownTimeout: 20 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	o.Datastore, o.Jobs, o.Logger = dir, d.Jobs(), log
	if o.Tick == 0 {
		o.Tick = 50 * time.Millisecond
	}
	if h.s, err = New(o); err != nil {
		d.Close()
		t.Fatal(err)
	}
	d.Register(h.s)
	d.API().SetPolicies(h.s)
	d.API().Registry().MustRegister(h.s.Collector())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(h.stop)
	h.d = d
	h.sock = filepath.Join(dir, "api.sock")
	if h.c, err = client.New("unix://"+h.sock, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return h
}

// disk creates a disk filled with size random bytes.
func (h *host) disk(t *testing.T, name string, size int64, seed uint64) {
	t.Helper()
	if _, err := h.c.CreateDisk(context.Background(), client.CreateDiskRequest{Name: name, Size: size}); err != nil {
		t.Fatal(err)
	}
	h.write(t, name, size, seed)
}

func (h *host) write(t *testing.T, name string, n int64, seed uint64) {
	t.Helper()
	d, err := h.d.Host().Disk(name)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	if _, err := d.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
}

// raw sends a request to the API and returns the status and body.
func (h *host) raw(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
	}}}
	req, _ := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (h *host) create(t *testing.T, p wire.Policy) wire.Policy {
	t.Helper()
	b, _ := json.Marshal(p)
	st, body := h.raw(t, "POST", "/v1/policies", string(b))
	if st != http.StatusCreated {
		t.Fatalf("create %s: %d %s", p.Name, st, body)
	}
	var out wire.Policy
	json.Unmarshal(body, &out)
	return out
}

// initRepo makes an encrypted repository (default KDF) in a new directory.
func initRepo(t *testing.T) string {
	t.Helper()
	return initRepoOpts(t, repo.Options{})
}

// initRepoOpts is initRepo with options (small packs pace a backup's
// reads by its throttled uploads).
func initRepoOpts(t *testing.T, o repo.Options) string {
	t.Helper()
	dir := filepath.Join(tempDir(t), "repo")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, password, o)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return dir
}

func readRepo(t *testing.T, dir string) *repo.Repository {
	t.Helper()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// waitJobs polls the history until ok says yes.
func waitJobs(t *testing.T, h *host, f client.JobFilter, within time.Duration, ok func([]client.Job) bool) []client.Job {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		list, err := h.c.ListJobs(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if ok(list) {
			return list
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(list, "", " ")
			t.Fatalf("jobs never got there: %s\nlogs:\n%s", b, h.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func count(list []client.Job, state string) int {
	n := 0
	for _, j := range list {
		if j.State == state {
			n++
		}
	}
	return n
}

// TestPolicyCRUD: policies through the API: validation, duplicate, no
// secret in any answer, the credentials file root-only, edit keeps the
// password, delete.
func TestPolicyCRUD(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	base := wire.Policy{Name: "nightly", Sources: wire.PolicySources{Globs: []string{"vm*"}}, Schedule: "0 2 * * *",
		TimeZone: "Europe/Paris", Repository: wire.PolicyRepository{Location: initRepo(t), Password: password},
		Retention: wire.PolicyRetention{Daily: 7, Within: "2d"}}
	for _, tc := range []struct {
		name string
		edit func(*wire.Policy)
	}{
		{"bad cron", func(p *wire.Policy) { p.Schedule = "61 * * * *" }},
		{"bad zone", func(p *wire.Policy) { p.TimeZone = "Mars/Olympus" }},
		{"no sources", func(p *wire.Policy) { p.Sources = wire.PolicySources{} }},
		{"bad glob", func(p *wire.Policy) { p.Sources.Globs = []string{"vm["} }},
		{"bad name", func(p *wire.Policy) { p.Name = "../x" }},
		{"bad within", func(p *wire.Policy) { p.Retention.Within = "3 weeks" }},
		{"bad transport", func(p *wire.Policy) { p.Transport = "carrier-pigeon" }},
		{"bad backoff", func(p *wire.Policy) { p.RetryBackoff = "-1s" }},
	} {
		p := base
		tc.edit(&p)
		b, _ := json.Marshal(p)
		if st, body := h.raw(t, "POST", "/v1/policies", string(b)); st != 400 {
			t.Errorf("%s: %d %s", tc.name, st, body)
		}
	}
	got := h.create(t, base)
	if got.Repository.Password != "" || !got.Repository.HasPassword || got.Status == nil || got.Status.NextRun == nil {
		t.Fatalf("created %+v", got)
	}
	// 02:00 in Paris is 01:00 or 00:00 UTC.
	if next := got.Status.NextRun.In(mustZone(t, "Europe/Paris")); next.Hour() != 2 || next.Minute() != 0 {
		t.Fatalf("next run %s", next)
	}
	b, _ := json.Marshal(base)
	if st, _ := h.raw(t, "POST", "/v1/policies", string(b)); st != http.StatusConflict {
		t.Fatalf("duplicate: %d", st)
	}
	if _, err := h.c.Policy(context.Background(), "nope"); !errors.Is(err, client.ErrPolicyNotFound) {
		t.Fatalf("missing policy: %v", err)
	}
	edit := base
	edit.Repository.Password = ""
	edit.MaxConcurrent = 3
	if _, err := h.c.UpdatePolicy(context.Background(), "nightly", edit); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(h.dir, "policy-credentials.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi.Mode(), err)
	}
	creds, _ := os.ReadFile(filepath.Join(h.dir, "policy-credentials.json"))
	if !strings.Contains(string(creds), password) {
		t.Fatal("the edit lost the password")
	}
	pol, _ := os.ReadFile(filepath.Join(h.dir, "policies.json"))
	_, list := h.raw(t, "GET", "/v1/policies", "")
	_, one := h.raw(t, "GET", "/v1/policies/nightly", "")
	for what, b := range map[string][]byte{"policies.json": pol, "list": list, "get": one} {
		if bytes.Contains(b, []byte(password)) {
			t.Fatalf("the password is in %s", what)
		}
	}
	if err := h.c.DeletePolicy(context.Background(), "nightly"); err != nil {
		t.Fatal(err)
	}
	if ps, err := h.c.ListPolicies(context.Background()); err != nil || len(ps) != 0 {
		t.Fatalf("after rm: %v %v", ps, err)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestScheduledBackups: an "@every 1s" policy over a glob backs up each
// disk again and again with the key derived once, keeps two points per
// disk (retention after each success), and no secret reaches the job
// history, the host's logs or an answer; the points restore-verify
// (check) clean.
func TestScheduledBackups(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	for i, n := range []string{"vm1", "vm2", "other"} {
		h.disk(t, n, 2*mib, uint64(i+1))
	}
	loc := initRepo(t)
	h.create(t, wire.Policy{Name: "often", Sources: wire.PolicySources{Globs: []string{"vm*"}}, Schedule: "@every 1s",
		Repository: wire.PolicyRepository{Location: loc, Password: password}, Retention: wire.PolicyRetention{Last: 2}, MaxConcurrent: 2})
	list := waitJobs(t, h, client.JobFilter{Policy: "often"}, 60*time.Second, func(l []client.Job) bool {
		ok := map[string]int{}
		for _, j := range l {
			if j.State == wire.JobSucceeded {
				ok[j.Source]++
			}
		}
		return ok["vm1"] >= 3 && ok["vm2"] >= 3
	})
	for _, j := range list {
		if j.Source == "other" {
			t.Fatalf("a disk outside the glob was backed up: %+v", j)
		}
		if j.State == wire.JobFailed {
			t.Fatalf("failed job %+v", j)
		}
	}
	if n := h.s.opens.Load(); n != 1 {
		t.Fatalf("the repository was opened (its key derived) %d times", n)
	}
	// The newest succeeded job's summary is the CLI's backup summary.
	var sum struct {
		ID     string             `json:"id"`
		Mode   string             `json:"mode"`
		Phases map[string]float64 `json:"phases"`
	}
	for _, j := range list {
		if j.State == wire.JobSucceeded {
			if err := json.Unmarshal(j.Summary, &sum); err != nil || sum.ID == "" || sum.Phases["copy"] == 0 && sum.Phases["commit"] == 0 {
				t.Fatalf("summary %s: %v", j.Summary, err)
			}
			break
		}
	}
	_, metrics := h.raw(t, "GET", "/metrics", "")
	for _, want := range []string{`blockwise_policy_last_success_timestamp_seconds{disk="vm1",policy="often"}`,
		`blockwise_policy_source_stale{disk="vm2",policy="often"} 0`, `blockwise_policy_next_run_timestamp_seconds{policy="often"}`,
		`blockwise_jobs_ended_total{kind="backup",state="succeeded"}`, `blockwise_job_stage_seconds_total{kind="backup",stage="copy"}`,
		`blockwise_backup_bytes_total{kind="read",policy="often"}`, `blockwise_jobs_running{kind="backup"}`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	h.stop()
	r := readRepo(t, loc)
	ms, err := r.ListManifests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, m := range ms {
		per[m.Disk]++
	}
	if per["vm1"] != 2 || per["vm2"] != 2 || len(per) != 2 {
		t.Fatalf("points per disk after retention: %v", per)
	}
	if _, err := r.Check(context.Background(), repo.CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check: %v", err)
	}
	db, _ := os.ReadFile(filepath.Join(h.dir, "jobs.db"))
	for what, b := range map[string][]byte{"jobs.db": db, "logs": []byte(h.logs.String())} {
		if bytes.Contains(b, []byte(password)) {
			t.Fatalf("the password is in %s", what)
		}
	}
}

// TestRetriesWithBackoff: a policy whose repository refuses its password
// fails, is retried Retries times with a doubling backoff (each attempt
// a job of its own), says why in its status, and no secret shows.
func TestRetriesWithBackoff(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	h.disk(t, "vm1", mib, 1)
	h.create(t, wire.Policy{Name: "wrongpw", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "@every 1h",
		Repository: wire.PolicyRepository{Location: initRepo(t), Password: "not the password"}, Retries: 2, RetryBackoff: "200ms"})
	run, err := h.c.RunPolicy(context.Background(), "wrongpw", "")
	if err != nil || len(run.Jobs) != 1 {
		t.Fatalf("run: %+v %v", run, err)
	}
	waitJobs(t, h, client.JobFilter{Policy: "wrongpw"}, 30*time.Second, func(l []client.Job) bool {
		return count(l, wire.JobFailed) == 3
	})
	time.Sleep(600 * time.Millisecond) // no fourth attempt
	list, _ := h.c.ListJobs(context.Background(), client.JobFilter{Policy: "wrongpw"})
	if len(list) != 3 {
		t.Fatalf("%d jobs, want 3 attempts", len(list))
	}
	for i, j := range list { // newest first
		if j.Attempt != 3-i || !strings.Contains(j.Error, "password") {
			t.Fatalf("job %d: attempt %d, error %q", i, j.Attempt, j.Error)
		}
	}
	// Backoff: 200ms before the second attempt, 400ms before the third.
	gap1 := list[1].Created.Sub(*list[2].Ended)
	gap2 := list[0].Created.Sub(*list[1].Ended)
	if gap1 < 200*time.Millisecond || gap2 < 400*time.Millisecond {
		t.Fatalf("backoff gaps %s, %s", gap1, gap2)
	}
	p, err := h.c.Policy(context.Background(), "wrongpw")
	if err != nil || p.Status.KeyReady || p.Status.KeyError == "" || p.Status.Sources[0].FailuresSince != 3 {
		t.Fatalf("status %+v %v", p.Status, err)
	}
}

// TestConcurrencyLimits: a policy with MaxConcurrent 1 runs its sources
// one at a time (the others queued), and a host limit of 2 holds across
// two policies; uploads are throttled so the runs overlap.
func TestConcurrencyLimits(t *testing.T) {
	h := startHost(t, tempDir(t), Options{MaxConcurrent: 2})
	for i, n := range []string{"a1", "a2", "a3", "b1", "b2"} {
		h.disk(t, n, mib, uint64(i+10))
	}
	loc := initRepo(t)
	for _, p := range []wire.Policy{
		{Name: "a", Sources: wire.PolicySources{Globs: []string{"a*"}}, MaxConcurrent: 1},
		{Name: "b", Sources: wire.PolicySources{Globs: []string{"b*"}}, MaxConcurrent: 2},
	} {
		p.Schedule = "@every 1h"
		p.Repository = wire.PolicyRepository{Location: loc, Password: password}
		p.LimitUploadKiB = 2048
		h.create(t, p)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := h.c.RunPolicy(context.Background(), n, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Running it again while queued or running starts nothing new.
	if again, err := h.c.RunPolicy(context.Background(), "a", ""); err != nil || len(again.Jobs) != 0 {
		t.Fatalf("second run now: %+v %v", again, err)
	}
	maxA, maxAll, sawQueued := 0, 0, false
	waitJobs(t, h, client.JobFilter{Kind: wire.JobBackup}, 60*time.Second, func(l []client.Job) bool {
		runA, runAll := 0, 0
		for _, j := range l {
			if j.State == wire.JobRunning {
				runAll++
				if j.Policy == "a" {
					runA++
				}
			}
			sawQueued = sawQueued || j.State == wire.JobQueued
		}
		maxA, maxAll = max(maxA, runA), max(maxAll, runAll)
		return count(l, wire.JobSucceeded) == 5
	})
	if maxA != 1 || maxAll > 2 || maxAll < 2 || !sawQueued {
		t.Fatalf("at most %d of policy a and %d in all ran at once (queued seen: %v)", maxA, maxAll, sawQueued)
	}
}

// TestMissedRunOnceAtStart: a host down for three periods of an hourly
// schedule runs it once when it starts, not three times; the run
// remembered then is not repeated by the next start.
func TestMissedRunOnceAtStart(t *testing.T) {
	dir := tempDir(t)
	h := startHost(t, dir, Options{})
	h.disk(t, "vm1", mib, 1)
	h.create(t, wire.Policy{Name: "hourly", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "0 * * * *",
		Repository: wire.PolicyRepository{Location: initRepo(t), Password: password}})
	h.stop()
	// The host was down: its last run is three and a half hours old.
	f := newFiles(dir)
	recs, secs, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	recs["hourly"].Policy.Created = time.Now().Add(-5 * time.Hour)
	recs["hourly"].LastRun = time.Now().Add(-210 * time.Minute)
	if err := f.save(recs, secs); err != nil {
		t.Fatal(err)
	}
	h = startHost(t, dir, Options{})
	waitJobs(t, h, client.JobFilter{Policy: "hourly"}, 30*time.Second, func(l []client.Job) bool {
		return count(l, wire.JobSucceeded) >= 1
	})
	time.Sleep(500 * time.Millisecond) // ten ticks: nothing more fires
	list, _ := h.c.ListJobs(context.Background(), client.JobFilter{Policy: "hourly"})
	if len(list) != 1 {
		t.Fatalf("%d runs at start, want 1", len(list))
	}
	h.stop()
	h = startHost(t, dir, Options{})
	time.Sleep(500 * time.Millisecond)
	if list, _ = h.c.ListJobs(context.Background(), client.JobFilter{Policy: "hourly"}); len(list) != 1 {
		t.Fatalf("%d runs after a second start, want still 1", len(list))
	}
}

// TestPruneCheckCancel: prune and check run on demand as jobs; checks
// rotate through the read-data groups; a throttled backup is canceled
// through the API and ends canceled; a stale source shows stale.
func TestPruneCheckCancel(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	h.disk(t, "vm1", 4*mib, 1)
	h.create(t, wire.Policy{Name: "p", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "@every 1h",
		Repository: wire.PolicyRepository{Location: initRepo(t), Password: password}, CheckGroups: 3, StaleAfter: "1ms",
		LimitUploadKiB: 512})
	ctx := context.Background()
	run, err := h.c.RunPolicy(ctx, "p", "backup")
	if err != nil || len(run.Jobs) != 1 {
		t.Fatalf("run %+v %v", run, err)
	}
	waitJobs(t, h, client.JobFilter{Policy: "p", State: wire.JobRunning}, 30*time.Second, func(l []client.Job) bool {
		return len(l) == 1 && (l[0].Progress.Stage == "copy" || l[0].Progress.Stage == "commit")
	})
	if _, err := h.c.CancelJob(ctx, run.Jobs[0]); err != nil {
		t.Fatal(err)
	}
	j, err := h.c.WaitJob(ctx, run.Jobs[0])
	if err != nil || j.State != wire.JobCanceled {
		t.Fatalf("canceled job %+v %v", j, err)
	}
	for i, want := range []string{"1/3", "2/3"} {
		run, err := h.c.RunPolicy(ctx, "p", "check")
		if err != nil || len(run.Jobs) != 1 {
			t.Fatalf("check %d: %+v %v", i, run, err)
		}
		j, _ := h.c.WaitJob(ctx, run.Jobs[0])
		var sum struct {
			Subset string `json:"readDataSubset"`
		}
		json.Unmarshal(j.Summary, &sum)
		if j.State != wire.JobSucceeded || sum.Subset != want {
			t.Fatalf("check %d: %s %s %s", i, j.State, j.Summary, j.Error)
		}
	}
	run, err = h.c.RunPolicy(ctx, "p", "prune")
	if err != nil || len(run.Jobs) != 1 {
		t.Fatalf("prune %+v %v", run, err)
	}
	if j, _ := h.c.WaitJob(ctx, run.Jobs[0]); j.State != wire.JobSucceeded {
		t.Fatalf("prune %+v", j)
	}
	if _, err := h.c.RunPolicy(ctx, "p", "defrag"); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("unknown run: %v", err)
	}
	p, _ := h.c.Policy(ctx, "p")
	if len(p.Status.Sources) != 1 || !p.Status.Sources[0].Stale || p.Status.Sources[0].LastSuccess != nil {
		t.Fatalf("status %+v", p.Status.Sources)
	}
}

// TestServePointAndRestore: a point of a policy is served over NBD by
// the host (the job's log names the URI and the overlay line) and reads
// back the disk's bytes; canceling the job stops serving. A restore to a
// new disk through the API writes the same bytes.
func TestServePointAndRestore(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	h.disk(t, "vm1", 2*mib, 7)
	h.create(t, wire.Policy{Name: "p", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "@yearly",
		Repository: wire.PolicyRepository{Location: initRepo(t), Password: password}})
	ctx := context.Background()
	sum := struct{ ID string }{runBackup(t, h)}
	want := make([]byte, 2*mib)
	d, _ := h.d.Host().Disk("vm1")
	if _, err := d.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}

	sp, err := h.c.ServePoint(ctx, "p", sum.ID[:12])
	if err != nil || len(sp.Jobs) != 1 {
		t.Fatalf("serve-point %+v %v", sp, err)
	}
	var uri string
	for range 100 {
		l, err := h.c.JobLogLines(ctx, sp.Jobs[0], 0, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range l.Lines {
			if i := strings.Index(line.Msg, "nbd+unix://"); i >= 0 && strings.Contains(line.Msg, "read-only at") {
				uri = line.Msg[i:]
			}
			if strings.Contains(line.Msg, "qemu-img create -f qcow2 -F raw -b 'nbd+unix://") && uri == "" {
				t.Fatalf("overlay line before the URI: %s", line.Msg)
			}
		}
		if uri != "" && l.Job.LogLines >= 2 {
			break
		}
	}
	nc, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatalf("dial %q: %v", uri, err)
	}
	got := make([]byte, 2*mib)
	if err := nc.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("served point differs from the disk (%v)", err)
	}
	nc.Close()
	if _, err := h.c.CancelJob(ctx, sp.Jobs[0]); err != nil {
		t.Fatal(err)
	}
	if j, _ := h.c.WaitJob(ctx, sp.Jobs[0]); j.State != wire.JobCanceled {
		t.Fatalf("served job after cancel: %+v", j)
	}
	if _, err := nbd.Dial(ctx, uri, nil); err == nil {
		t.Fatal("still serving after cancel")
	}

	rs, err := h.c.RestorePoint(ctx, "p", wire.RestoreRequest{Point: sum.ID, ToDisk: "vm1-restored"})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := h.c.WaitJob(ctx, rs.Jobs[0]); j.State != wire.JobSucceeded {
		t.Fatalf("restore %+v", j)
	}
	rd, err := h.d.Host().Disk("vm1-restored")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restored disk differs (%v)", err)
	}
	// Rollback in place: the disk changes, then goes back to the point.
	h.write(t, "vm1", mib, 99)
	rb, err := h.c.RestorePoint(ctx, "p", wire.RestoreRequest{Point: sum.ID, Rollback: true})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := h.c.WaitJob(ctx, rb.Jobs[0]); j.State != wire.JobSucceeded || !strings.Contains(string(j.Summary), `"changedBytes":1048576`) {
		t.Fatalf("rollback %+v %s", j, j.Summary)
	}
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("rolled-back disk differs from the point (%v)", err)
	}
	for _, bad := range []wire.RestoreRequest{{Point: sum.ID}, {Point: sum.ID, ToFile: "relative.raw"}, {Point: "ffff", ToDisk: "x"},
		{Point: sum.ID, ToDisk: "y", Rollback: true}} {
		if _, err := h.c.RestorePoint(ctx, "p", bad); !errors.Is(err, client.ErrInvalidRequest) {
			t.Fatalf("restore %+v: %v", bad, err)
		}
	}
}

// TestGracefulStopInterrupts: a host stopped gracefully while a policy's
// backup runs ends the job interrupted (not failed, not retried) and the
// backup cleans up through the still-serving API: no snapshot is left.
func TestGracefulStopInterrupts(t *testing.T) {
	dir := tempDir(t)
	h := startHost(t, dir, Options{})
	h.disk(t, "vm1", 4*mib, 3)
	h.create(t, wire.Policy{Name: "p", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "@yearly",
		Repository:     wire.PolicyRepository{Location: initRepoOpts(t, repo.Options{PackSize: 256 << 10}), Password: password},
		LimitUploadKiB: 512, Retries: 3})
	ctx := context.Background()
	run, err := h.c.RunPolicy(ctx, "p", "")
	if err != nil {
		t.Fatal(err)
	}
	waitJobs(t, h, client.JobFilter{Policy: "p"}, 30*time.Second, func(l []client.Job) bool {
		return len(l) == 1 && l[0].State == wire.JobRunning && l[0].Progress.Stage == "copy"
	})
	if snaps, _ := h.c.ListSnapshots(ctx, "vm1"); len(snaps) != 1 {
		t.Fatalf("the backup's snapshot is not there mid-copy: %+v", snaps)
	}
	h.stop()
	h = startHost(t, dir, Options{})
	j, err := h.c.Job(ctx, run.Jobs[0])
	if err != nil || j.State != wire.JobInterrupted {
		t.Fatalf("after a graceful stop: %+v %v", j, err)
	}
	if list, _ := h.c.ListJobs(ctx, client.JobFilter{Policy: "p"}); len(list) != 1 {
		t.Fatalf("%d jobs: a stop is not a failure to retry", len(list))
	}
	if snaps, err := h.c.ListSnapshots(ctx, "vm1"); err != nil || len(snaps) != 0 {
		t.Fatalf("snapshots left: %+v %v", snaps, err)
	}
}

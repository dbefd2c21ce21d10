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
	"github.com/blockwise/blockwise/internal/repo"
)

const (
	mib      = 1 << 20
	password = "correct horse battery staple 7f3a"
)

// host is a real blockwise host (daemon) with the scheduler registered,
// on a short temporary datastore.
type host struct {
	dir   string
	d     *daemon.Daemon
	s     *Scheduler
	c     *client.Client
	logs  *syncBuffer
	stop  func()
	sock  string
	clock func() time.Time
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuffer) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

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
	dir := filepath.Join(tempDir(t), "repo")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, password, repo.Options{})
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

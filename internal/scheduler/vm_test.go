package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/sources"
	"github.com/blockwise/blockwise/internal/transport"
)

// fakeVM is a hypervisor source whose drives are host disks: drive
// VM/D is the host's disk D, read over NBD. Everything above the Host
// interface (the scheduler, backup, the repository) is real.
type fakeVM struct {
	name   string
	host   backup.ClientHost
	open   func(context.Context, string, string) (backup.Source, error)
	drives []string
	closed func()
}

func (v *fakeVM) hd(disk string) string { return strings.TrimPrefix(disk, v.name+"/") }

func (v *fakeVM) Recovered() []string { return nil }

func (v *fakeVM) Disks() []string {
	var out []string
	for _, d := range v.drives {
		out = append(out, v.name+"/"+d)
	}
	return out
}
func (v *fakeVM) Disk(ctx context.Context, d string) (backup.DiskInfo, error) {
	return v.host.Disk(ctx, v.hd(d))
}
func (v *fakeVM) Snapshots(ctx context.Context, d string) ([]backup.Snapshot, error) {
	return v.host.Snapshots(ctx, v.hd(d))
}
func (v *fakeVM) CreateSnapshot(ctx context.Context, d, desc string) (backup.Snapshot, error) {
	return v.host.CreateSnapshot(ctx, v.hd(d), desc)
}
func (v *fakeVM) ChangedAreas(ctx context.Context, d, snap string, start int64, since string) (*backup.Areas, error) {
	return v.host.ChangedAreas(ctx, v.hd(d), snap, start, since)
}
func (v *fakeVM) DeleteSnapshot(ctx context.Context, d, snap string) error {
	return v.host.DeleteSnapshot(ctx, v.hd(d), snap)
}
func (v *fakeVM) OpenView(ctx context.Context, d, snap string) (backup.Source, error) {
	return v.open(ctx, v.hd(d), snap)
}
func (v *fakeVM) Close() error { v.closed(); return nil }

// fakeSources opens fake VMs: "qemu+unix:///fake/NAME.sock" is VM NAME
// over the host disks drives[NAME]; a name without drives is a VM that
// is down. It records the options each open was given.
type fakeSources struct {
	mu     sync.Mutex
	h      *host
	drives map[string][]string
	opened []sources.Options
	closes int
}

func (f *fakeSources) open(ctx context.Context, uri string, o sources.Options) (sources.VM, error) {
	if err := sources.Check(uri); err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(filepath.Base(strings.TrimPrefix(uri, "qemu+unix://")), ".sock")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, o)
	if len(f.drives[name]) == 0 {
		return nil, errors.New("dial " + uri + ": connection refused")
	}
	env := transport.Env{Client: f.h.c, HostURL: "unix://" + f.h.sock, Datastore: f.h.dir, Conns: 1}
	return &fakeVM{name: name, host: backup.ClientHost{C: f.h.c}, open: transport.Opener(order(wire.Policy{}), env, nil), drives: f.drives[name],
		closed: func() { f.mu.Lock(); f.closes++; f.mu.Unlock() }}, nil
}

// TestVMSources: a policy with hypervisor source URIs beside a disk
// name: one job per source (named by its URI) backing up all its drives,
// with the policy's quiescing and the repository's tag; an incremental
// second run reads only what changed; retention per drive; a VM that is
// down fails its own job (retried) and not the others; the status shows
// the sources as "vm"; a URI with a password is refused and shows in no
// answer, file or log.
func TestVMSources(t *testing.T) {
	f := &fakeSources{drives: map[string][]string{"vm7": {"a", "b"}}}
	h := startHost(t, tempDir(t), Options{OpenSource: f.open})
	f.h = h
	ctx := context.Background()
	for i, n := range []string{"a", "b", "plain"} {
		h.disk(t, n, 2*mib, uint64(i+1))
	}
	loc := initRepo(t)
	vm7, down := "qemu+unix:///fake/vm7.sock", "qemu+unix:///fake/down.sock"
	p := wire.Policy{Name: "vms", Sources: wire.PolicySources{URIs: []string{vm7, down}, Disks: []string{"plain"}}, Schedule: "@yearly",
		Repository: wire.PolicyRepository{Location: loc, Password: password}, Retention: wire.PolicyRetention{Last: 1},
		Quiesce: wire.PolicyQuiesce{Mode: "require", Timeout: "5s", PreFreeze: "true"}, MaxConcurrent: 2, Retries: 1, RetryBackoff: "10ms"}
	const secret = "hunter2-of-ssh"
	for name, edit := range map[string]func(*wire.Policy){
		"password in URI": func(p *wire.Policy) { p.Sources.URIs = []string{"qemu+ssh://root:" + secret + "@kvm1/system?domain=d"} },
		"bad URI":         func(p *wire.Policy) { p.Sources.URIs = []string{"qemu+unix://host/q.sock"} },
		"bad quiesce":     func(p *wire.Policy) { p.Quiesce.Mode = "sometimes" },
		"bad timeout":     func(p *wire.Policy) { p.Quiesce.Timeout = "0s" },
	} {
		bad := p
		edit(&bad)
		b, _ := json.Marshal(bad)
		if st, body := h.raw(t, "POST", "/v1/policies", string(b)); st != http.StatusBadRequest || bytes.Contains(body, []byte(secret)) {
			t.Errorf("%s: %d %s", name, st, body)
		}
	}
	got := h.create(t, p)
	if got.Quiesce != p.Quiesce {
		t.Fatalf("quiesce not kept: %+v", got.Quiesce)
	}
	run, err := h.c.RunPolicy(ctx, "vms", "backup")
	if err != nil || len(run.Jobs) != 3 {
		t.Fatalf("run: %+v %v", run, err)
	}
	first := waitJobs(t, h, client.JobFilter{Policy: "vms"}, time.Minute, func(l []client.Job) bool {
		return count(l, "succeeded") == 2 && count(l, "failed") == 2 // down: the attempt and its retry
	})
	vmJob := jobOf(t, first, vm7, "succeeded")
	var sum vmSummary
	if err := json.Unmarshal(vmJob.Summary, &sum); err != nil || len(sum.Drives) != 2 || sum.Mode != "full" || sum.Size != 4*mib || sum.Read != 4*mib {
		t.Fatalf("first summary %s: %v", vmJob.Summary, err)
	}
	if d := jobOf(t, first, down, "failed"); !strings.Contains(d.Error, "connection refused") {
		t.Fatalf("down VM: %+v", d)
	}
	f.mu.Lock()
	o, closes := f.opened[0], f.closes
	f.mu.Unlock()
	r := readRepo(t, loc)
	if o.Quiesce != string(quiesce.Require) || o.QuiesceTimeout != 5*time.Second || o.PreFreeze != "true" || o.Tag != sources.Tag(r) || closes != 1 {
		t.Fatalf("opened with %+v, closed %d times", o, closes)
	}

	h.write(t, "a", 64<<10, 9) // 64 KiB changed on drive a, nothing on b
	run, _ = h.c.RunPolicy(ctx, "vms", "backup")
	var second client.Job
	for _, id := range run.Jobs {
		if j, err := h.c.WaitJob(ctx, id); err == nil && j.Source == vm7 {
			second = *j
		}
	}
	sum = vmSummary{}
	json.Unmarshal(second.Summary, &sum)
	if second.State != "succeeded" || sum.Mode != "incremental" || len(sum.Drives) != 2 || sum.Drives[0].Read != 64<<10 || sum.Drives[1].Read != 0 || sum.Read != 64<<10 {
		t.Fatalf("second run %s: %s", second.State, second.Summary)
	}
	ms, err := r.ListManifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perDisk := map[string]int{}
	for _, m := range ms {
		perDisk[m.Disk]++
	}
	if perDisk["vm7/a"] != 1 || perDisk["vm7/b"] != 1 || perDisk["plain"] != 1 {
		t.Fatalf("points per disk after keep-last 1: %v", perDisk)
	}
	st, err := h.c.Policy(ctx, "vms")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, s := range st.Status.Sources {
		kinds[s.Disk] = s.Kind + "/" + s.LastState
	}
	if kinds[vm7] != "vm/succeeded" || kinds[down] != "vm/failed" || kinds["plain"] != "/succeeded" {
		t.Fatalf("sources %v", kinds)
	}
	noSecret(t, h, secret)
}

// jobOf is the job of source src in state among list.
func jobOf(t *testing.T, list []client.Job, src, state string) client.Job {
	t.Helper()
	for _, j := range list {
		if j.Source == src && j.State == state {
			return j
		}
	}
	t.Fatalf("no %s job of %s in %+v", state, src, list)
	return client.Job{}
}

// noSecret: secret is in no answer of the policies and jobs routes, no
// file of the datastore (policies, credentials, job history) and no log.
func noSecret(t *testing.T, h *host, secret string) {
	t.Helper()
	for _, path := range []string{"/v1/policies", "/v1/policies/vms", "/v1/jobs"} {
		if _, b := h.raw(t, "GET", path, ""); bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s shows the secret", path)
		}
	}
	filepath.Walk(h.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() < 64<<20 {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the secret", p)
			}
		}
		return nil
	})
	if strings.Contains(h.logs.String(), secret) {
		t.Error("the host's log shows the secret")
	}
}

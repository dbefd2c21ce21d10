package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

// fakePolicies stands in for the scheduler beside a real host and
// history: the console only reads its List.
type fakePolicies []wire.Policy

func (f fakePolicies) List(context.Context) ([]wire.Policy, error) { return f, nil }

func get(t *testing.T, c *Console, path string, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if rec.Code != 200 {
		t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// newHost is a host on a temporary datastore with 1 MiB disks of the
// names, and its job history; both close when the test ends.
func newHost(t *testing.T, names ...string) (*host.Host, *jobs.Store, string) {
	t.Helper()
	dir := t.TempDir()
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := host.New(ds)
	t.Cleanup(func() { h.Close() })
	for _, n := range names {
		if _, err := h.Create(n, 1<<20, disk.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := jobs.Open(filepath.Join(dir, "jobs.db"), jobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return h, st, dir
}

// TestConsoleData: the overview puts failing, then stale, then
// unprotected disks first; the grid shows each day's last outcome with
// its job; a source's page lists its points; a job that ends after the
// console started (OnEnd) shows at once.
func TestConsoleData(t *testing.T) {
	h, st, dir := newHost(t, "ok", "failing", "stale", "loose")
	now := time.Now().UTC()
	yesterday, earlier := now.Add(-24*time.Hour), now.Add(-24*time.Hour+time.Minute)
	sum, _ := json.Marshal(map[string]any{"id": "abcd", "size": 1 << 20, "readBytes": 4096, "newBytes": 100,
		"consistency": "application", "phases": map[string]float64{"snapshot": 0.5, "copy": 1.5, "commit": 0.5, "prepare": 0}})
	ids, err := st.Import([]wire.Job{
		{Kind: wire.JobBackup, Policy: "p", Source: "ok", State: wire.JobFailed, Created: yesterday, Started: &yesterday, Ended: &yesterday},
		{Kind: wire.JobBackup, Policy: "p", Source: "ok", State: wire.JobSucceeded, Created: earlier, Started: &earlier, Ended: &earlier, Summary: sum},
	})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := h.Labels()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Update("loose", map[string]string{"tier": "gold", "env": "dev"}, nil, false); err != nil {
		t.Fatal(err)
	}
	c := New(Options{Host: h, Jobs: st, Datastore: dir})
	src := func(d string, fails int, stale bool) wire.SourceStatus {
		return wire.SourceStatus{Disk: d, FailuresSince: fails, Stale: stale}
	}
	c.SetPolicies(fakePolicies{{Name: "p", Schedule: "@daily", Status: &wire.PolicyStatus{
		Sources: []wire.SourceStatus{src("ok", 0, false), src("failing", 2, true), src("stale", 0, true)}}}})
	var ov Overview
	get(t, c, "/console/api/overview", &ov)
	var order []string
	for _, s := range ov.Sources {
		order = append(order, s.Disk)
	}
	if strings.Join(order, ",") != "failing,stale,loose,ok" || ov.Protected != 3 || ov.Unprotected != 1 || ov.Failing != 1 || ov.StaleCount != 2 {
		t.Fatalf("overview %v %+v", order, ov)
	}
	if ov.Sources[2].Labels != "env=dev,tier=gold" || ov.Sources[3].Labels != "" {
		t.Fatalf("labels on the overview: %+v", ov.Sources)
	}
	if ov.Datastore.Size <= 0 || ov.Datastore.Provisioned != 4<<20 {
		t.Fatalf("datastore %+v", ov.Datastore)
	}
	var g Grid
	get(t, c, "/console/api/grid?days=3", &g)
	if len(g.Days) != 3 || len(g.Rows) != 4 {
		t.Fatalf("grid %+v", g)
	}
	for _, r := range g.Rows {
		if r.Source == "ok" && r.Cells[1] != "s"+strings.TrimPrefix(ids[1], "job-")+"x2" {
			t.Fatalf("ok's cells %q", r.Cells)
		}
	}
	// A job ending now reaches the pages through OnEnd.
	r, _ := st.Begin(jobs.Spec{Kind: wire.JobBackup, Policy: "p", Source: "loose"})
	r.Finish(json.RawMessage(sum), nil)
	var sp SourcePage
	get(t, c, "/console/api/sources/loose", &sp)
	if len(sp.Points) != 1 || sp.Points[0].Point != "abcd" || sp.Points[0].Read != 4096 || sp.Size != 1<<20 ||
		sp.Points[0].Bottleneck != "copy" || sp.Points[0].Share != 0.6 || sp.Points[0].Consistency != "application" {
		t.Fatalf("source page %+v", sp)
	}
	// The event stream sends the active jobs.
	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	run, _ := st.Begin(jobs.Spec{Kind: wire.JobRestore, Source: "ok"})
	defer run.Finish(nil, nil)
	req := httptest.NewRequest("GET", srv.URL+"/console/events", nil).WithContext(ctx)
	req.RequestURI = ""
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if !strings.Contains(line, run.ID()) {
				t.Fatalf("event %s", line)
			}
			break
		}
	}
}

// BenchmarkGrid: the grid of 1,000 sources × 100 points over 30 days.
func BenchmarkGrid(b *testing.B) {
	c := &Console{idx: &index{by: map[string][]Point{}}}
	now := time.Now().UTC()
	var names []string
	for d := range 1000 {
		n := fmt.Sprintf("d%04d", d)
		names = append(names, n)
		for p := range 100 {
			t := now.Add(-time.Duration(100-p) * 21 * time.Hour)
			c.idx.by[n] = append(c.idx.by[n], Point{Job: fmt.Sprintf("job-%d", p*1000+d), State: wire.JobSucceeded, Time: t})
		}
	}
	b.ResetTimer()
	for range b.N {
		g := c.gridFor(names, 30, now)
		if _, err := json.Marshal(g); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConsoleVMSource: a policy's hypervisor source (a URI, kind "vm")
// is a row of the overview and of the grid beside the disks, and its
// page, asked for with the URI escaped in the path, lists its points.
func TestConsoleVMSource(t *testing.T) {
	h, st, dir := newHost(t, "d1")
	const uri = "qemu+unix:///run/vm1/qmp.sock?drive=a,b"
	sum, _ := json.Marshal(map[string]any{"id": "feed", "size": 2 << 20, "readBytes": 8192, "drives": []any{}})
	r, _ := st.Begin(jobs.Spec{Kind: wire.JobBackup, Policy: "p", Source: uri})
	r.Finish(json.RawMessage(sum), nil)
	c := New(Options{Host: h, Jobs: st, Datastore: dir})
	c.SetPolicies(fakePolicies{{Name: "p", Schedule: "@daily", Status: &wire.PolicyStatus{
		Sources: []wire.SourceStatus{{Disk: uri, Kind: wire.SourceKindVM, LastJob: r.ID(), LastState: wire.JobSucceeded}}}}})
	var ov Overview
	get(t, c, "/console/api/overview", &ov)
	if len(ov.Sources) != 2 || ov.Disks != 1 || ov.Protected != 0 || ov.Unprotected != 1 {
		t.Fatalf("overview %+v", ov)
	}
	if vm := ov.Sources[1]; vm.Disk != uri || vm.Kind != wire.SourceKindVM || len(vm.Policies) != 1 || vm.LastState != wire.JobSucceeded {
		t.Fatalf("the VM's row %+v", vm)
	}
	var g Grid
	get(t, c, "/console/api/grid?days=2", &g)
	if len(g.Rows) != 2 || g.Rows[1].Source != uri || g.Rows[1].Cells[1] == "" {
		t.Fatalf("grid %+v", g)
	}
	var sp SourcePage
	get(t, c, "/console/api/sources/"+url.PathEscape(uri), &sp)
	if sp.Disk != uri || len(sp.Points) != 1 || sp.Points[0].Point != "feed" || len(sp.Policies) != 1 {
		t.Fatalf("source page %+v", sp)
	}
}

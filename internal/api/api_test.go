package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

const mib = 1 << 20

// unixClient is an HTTP client of the env's API socket.
func unixClient(e *apitest.Env) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.Sock)
	}}}
}

// raw sends a request over the env's unix socket and decodes the answer.
func raw(t *testing.T, e *apitest.Env, method, path, body string, out any) int {
	t.Helper()
	hc := unixClient(e)
	req, _ := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func TestDiskLifecycle(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	d, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 64 * mib, CBTGranularity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != 64*mib || d.CBT == nil || d.CBT.Granularity != 4096 || d.ChangeID == "" {
		t.Fatalf("created %+v", d)
	}
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "nocbt", Size: mib, DisableCBT: true}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListDisks(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "nocbt" || list[0].CBT != nil {
		t.Fatalf("list %+v %v", list, err)
	}
	if d, err = c.GrowDisk(ctx, "vm1", 128*mib); err != nil || d.Size != 128*mib {
		t.Fatalf("grow %+v %v", d, err)
	}
	if d, err = c.Disk(ctx, "vm1"); err != nil || d.Size != 128*mib {
		t.Fatalf("get %+v %v", d, err)
	}
	if err := c.DeleteDisk(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Disk(ctx, "vm1"); !errors.Is(err, client.ErrDiskNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestProblems(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	if _, err := e.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.CreateSnapshot(ctx, "vm1", "s1", ""); err != nil {
		t.Fatal(err)
	}
	big := `{"name":"x","size":512,"grain":` + strings.Repeat(" ", 2<<20) + `4096}`
	cases := []struct {
		method, path, body string
		status             int
		typ                string
	}{
		{"GET", "/v1/disks/nope", "", 404, wire.ProblemDiskNotFound},
		{"GET", "/v1/disks/bad%20name", "", 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"x","size":-512}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"x","size":1000}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"x","size":512,"grain":1000}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"x","size":512,"colour":"red"}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"-x","size":512}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks", `{"name":"vm1","size":512}`, 409, wire.ProblemDiskExists},
		{"POST", "/v1/disks", big, 413, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks/vm1/grow", `{"size":512}`, 400, wire.ProblemInvalidRequest},
		{"POST", "/v1/disks/vm1/snapshots", `{"id":"s1"}`, 409, wire.ProblemSnapshotExists},
		{"GET", "/v1/disks/vm1/snapshots/nope", "", 404, wire.ProblemSnapshotNotFound},
		{"DELETE", "/v1/disks/vm1/snapshots/nope", "", 404, wire.ProblemSnapshotNotFound},
		{"GET", "/v1/disks/vm1/changes?snapshot=s1", "", 400, wire.ProblemInvalidRequest},
		{"GET", "/v1/disks/vm1/changes?snapshot=s1&changeId=bogus", "", 400, wire.ProblemChangeIDInvalid},
		{"GET", "/v1/disks/vm1/changes?snapshot=s1&changeId=abc/1", "", 400, wire.ProblemChangeIDInvalid},
		{"GET", "/v1/disks/vm1/changes?snapshot=s1&changeId=*&startOffset=-1", "", 400, wire.ProblemOutOfRange},
		{"GET", "/v1/disks/vm1/changes?snapshot=s1&changeId=*&startOffset=999999999999", "", 400, wire.ProblemOutOfRange},
		{"GET", "/v1/disks/vm1/changes?snapshot=nope&changeId=*", "", 404, wire.ProblemSnapshotNotFound},
		{"GET", "/v1/tasks/nope", "", 404, wire.ProblemTaskNotFound},
		{"GET", "/v1/nothing", "", 404, wire.ProblemInvalidRequest},
		{"PUT", "/v1/disks", "", 405, wire.ProblemInvalidRequest},
	}
	for _, tc := range cases {
		var p wire.Problem
		if got := raw(t, e, tc.method, tc.path, tc.body, &p); got != tc.status || p.Type != tc.typ || p.Status != tc.status || p.Title == "" {
			t.Errorf("%s %s: %d %+v, want %d %s", tc.method, tc.path, got, p, tc.status, tc.typ)
		}
	}
	if names, _ := e.Host.Datastore().List(); len(names) != 1 {
		t.Fatalf("bad requests created disks: %v", names)
	}
}

func TestSnapshotsChangesExports(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 16 * mib, CBTGranularity: 65536}); err != nil {
		t.Fatal(err)
	}
	d, _ := e.Host.Disk("vm1")
	d.WriteAt(make([]byte, 4096), 0)
	s1, err := c.CreateSnapshot(ctx, "vm1", "", "first")
	if err != nil || s1.ID == "" || s1.ChangeID == "" || s1.Description != "first" {
		t.Fatalf("snapshot %+v %v", s1, err)
	}
	for _, off := range []int64{5 * mib, 9 * mib} {
		if _, err := d.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := c.CreateSnapshot(ctx, "vm1", "s2", "")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := c.QueryChangedAreas(ctx, "vm1", "s2", s1.ChangeID, 0)
	want := []client.Area{{Start: 5 * mib, Length: 65536}, {Start: 9 * mib, Length: 65536}}
	if err != nil || ca.Length != 16*mib || len(ca.ChangedArea) != 2 || ca.ChangedArea[0] != want[0] || ca.ChangedArea[1] != want[1] {
		t.Fatalf("changes %+v %v", ca, err)
	}
	if ca, err = c.QueryChangedAreas(ctx, "vm1", "s2", s1.ChangeID, 6*mib); err != nil || len(ca.ChangedArea) != 1 || ca.StartOffset != 6*mib {
		t.Fatalf("changes from 6 MiB %+v %v", ca, err)
	}
	all, err := c.AllChangedAreas(ctx, "vm1", s1.ID, client.AllChanges)
	if err != nil || len(all) != 1 || all[0].Start != 0 {
		t.Fatalf("all changes %+v %v", all, err)
	}
	snaps, err := c.ListSnapshots(ctx, "vm1")
	if err != nil || len(snaps) != 2 || snaps[1].ID != "s2" {
		t.Fatalf("list %+v %v", snaps, err)
	}
	if got, err := c.Snapshot(ctx, "vm1", "s2"); err != nil || got.ChangeID != s2.ChangeID {
		t.Fatalf("get %+v %v", got, err)
	}
	ex, err := c.Exports(ctx, "vm1", "s2")
	if err != nil || ex.Export != "vm1@s2" || len(ex.URIs) != 2 ||
		ex.URIs[0] != "nbd+unix:///vm1@s2?socket="+e.Dir+"/nbd.sock" || ex.URIs[1] != "nbds://127.0.0.1:10809/vm1@s2" {
		t.Fatalf("exports %+v %v", ex, err)
	}
	if ex, err = c.Exports(ctx, "vm1", ""); err != nil || ex.Export != "vm1" {
		t.Fatalf("disk exports %+v %v", ex, err)
	}
}

// TestBusy: a snapshot or disk with an open NBD export is not deleted.
func TestBusy(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib})
	c.CreateSnapshot(ctx, "vm1", "s1", "")
	x, err := e.Host.Open(ctx, "vm1@s1")
	if err != nil {
		t.Fatal(err)
	}
	var p wire.Problem
	if st := raw(t, e, "DELETE", "/v1/disks/vm1/snapshots/s1", "", &p); st != 409 || p.Type != wire.ProblemDiskBusy {
		t.Fatalf("delete snapshot in use: %d %+v", st, p)
	}
	if err := c.DeleteDisk(ctx, "vm1"); !errors.Is(err, client.ErrBusy) {
		t.Fatalf("delete disk in use: %v", err)
	}
	if d, err := c.Disk(ctx, "vm1"); err != nil || len(d.Snapshots) != 1 || d.OpenExports != 1 {
		t.Fatalf("after refused deletes: %+v %v", d, err)
	}
	x.Close()
	if err := c.DeleteDisk(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
}

func TestTaskWait(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib})
	c.CreateSnapshot(ctx, "vm1", "s1", "")
	d, _ := e.Host.Disk("vm1")
	d.WriteAt(make([]byte, mib), 0)
	task, err := c.DeleteSnapshot(ctx, "vm1", "s1")
	if err != nil || task.ID == "" || task.Kind != "consolidate" || task.Snapshot != "s1" {
		t.Fatalf("delete %+v %v", task, err)
	}
	var got wire.Task
	if st := raw(t, e, "GET", "/v1/tasks/"+task.ID+"?wait=10s", "", &got); st != 200 || got.State != wire.TaskDone || got.Finished == nil {
		t.Fatalf("wait: %d %+v", st, got)
	}
	done, err := c.WaitTask(ctx, task.ID)
	if err != nil || done.State != client.TaskDone {
		t.Fatalf("WaitTask %+v %v", done, err)
	}
	if ts, err := c.ListTasks(ctx); err != nil || len(ts) != 1 {
		t.Fatalf("tasks %+v %v", ts, err)
	}
	var p wire.Problem
	if st := raw(t, e, "GET", "/v1/tasks/"+task.ID+"?wait=soon", "", &p); st != 400 {
		t.Fatalf("bad wait: %d", st)
	}
}

func TestMetrics(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	e.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib})
	x, err := e.Host.Open(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	x.WriteAt(ctx, make([]byte, 8192), 0, false)
	x.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.Sock)
	}}}
	resp, err := hc.Get("http://x/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`blockwise_disk_written_bytes_total{disk="vm1"} 8192`, `blockwise_disk_writes_total{disk="vm1"} 1`,
		`blockwise_disk_cbt_dirty_blocks{disk="vm1"} 1`, `blockwise_disk_snapshots{disk="vm1"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestConcurrentSnapshots: the engine serializes snapshots of one disk,
// so concurrent requests all succeed with distinct change IDs.
func TestConcurrentSnapshots(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib})
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() { _, err := c.CreateSnapshot(ctx, "vm1", "", ""); errs <- err }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := c.ListSnapshots(ctx, "vm1")
	seen := map[string]bool{}
	for _, s := range snaps {
		seen[s.ChangeID] = true
	}
	if err != nil || len(snaps) != n || len(seen) != n {
		t.Fatalf("snapshots %+v %v", snaps, err)
	}
}

// TestLeaseAPI: the disk lease through the client: a second holder gets
// 409 lease-held naming the first; renew, release, and a lease gone is
// lease-not-found.
func TestLeaseAPI(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm", Size: mib}); err != nil {
		t.Fatal(err)
	}
	a, err := c.AcquireLease(ctx, "vm", "blockwise backup host=h1 pid=7", time.Minute, "")
	if err != nil || a.ID == "" || a.Holder != "blockwise backup host=h1 pid=7" || !a.Expires.After(a.Acquired) {
		t.Fatalf("acquire: %+v, %v", a, err)
	}
	_, err = c.AcquireLease(ctx, "vm", "other", time.Minute, "")
	var pe *client.Error
	if !errors.Is(err, client.ErrLeaseHeld) || errors.Is(err, client.ErrBusy) || !errors.As(err, &pe) || pe.Status != 409 || !strings.Contains(pe.Detail, "host=h1 pid=7") {
		t.Fatalf("second holder: %v", err)
	}
	if cur, err := c.CurrentLease(ctx, "vm"); err != nil || cur.ID != a.ID {
		t.Fatalf("current: %+v, %v", cur, err)
	}
	if _, err := c.RenewLease(ctx, "vm", a.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"holder":"x","ttlMillis":1}`, `{"ttlMillis":1000}`, `{"holder":"x","ttlMillis":1000,"extra":1}`} {
		if code := raw(t, e, "POST", "/v1/disks/vm/lease", bad, nil); code != 400 {
			t.Fatalf("POST lease %s: %d", bad, code)
		}
	}
	if err := c.ReleaseLease(ctx, "vm", a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RenewLease(ctx, "vm", a.ID, time.Minute); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("renew after release: %v", err)
	}
	if _, err := c.CurrentLease(ctx, "vm"); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("current after release: %v", err)
	}
}

package console

import (
	"bufio"
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

// fakeReplication stands in for the replication service: the console
// only reads its groups and replicas.
type fakeReplication struct {
	mu       sync.Mutex
	groups   []wire.Replication
	replicas []wire.Replica
}

func (f *fakeReplication) Groups() []wire.Replication {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Replication(nil), f.groups...)
}

func (f *fakeReplication) Replicas() ([]wire.Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Replica(nil), f.replicas...), nil
}

// TestConsoleReplication: without a replication service the page says
// so; with one it lists the groups and replicas; the event stream sends
// a "replication" event when a replica's state changes (a test failover
// begins), and none for the lag that moves every second.
func TestConsoleReplication(t *testing.T) {
	dir := t.TempDir()
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := host.New(ds)
	defer h.Close()
	st, err := jobs.Open(filepath.Join(dir, "jobs.db"), jobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := New(Options{Host: h, Jobs: st})
	var names []string // the clone page's choice of disks
	if get(t, c, "/console/api/disks", &names); len(names) != 0 {
		t.Fatalf("disks of an empty datastore: %q", names)
	}
	if _, err := h.Create("vm1", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	if get(t, c, "/console/api/disks", &names); len(names) != 1 || names[0] != "vm1" {
		t.Fatalf("disks: %q", names)
	}
	var rp ReplicationPage
	get(t, c, "/console/api/replication", &rp)
	if rp.Enabled || rp.Groups == nil || rp.Replicas == nil {
		t.Fatalf("without replication: %+v", rp)
	}
	now := time.Now().UTC()
	f := &fakeReplication{
		groups:   []wire.Replication{{Name: "g1", State: wire.ReplicationOK, RPO: "15m", LastPoint: &wire.ReplicationPoint{Seq: 3, Time: now}, LastPointAge: 1}},
		replicas: []wire.Replica{{Group: "g2", State: "ok", Points: []wire.ReplicationPoint{{Seq: 7, Time: now}}}},
	}
	c.SetReplication(f)
	get(t, c, "/console/api/replication", &rp)
	if !rp.Enabled || len(rp.Groups) != 1 || rp.Groups[0].LastPoint.Seq != 3 || len(rp.Replicas) != 1 || rp.Replicas[0].Group != "g2" {
		t.Fatalf("replication page %+v", rp)
	}

	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := httptest.NewRequest("GET", srv.URL+"/console/events", nil).WithContext(ctx)
	req.RequestURI = ""
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() string { // the next replication event's data
		t.Helper()
		for ev := ""; sc.Scan(); {
			if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				ev = e
			} else if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && ev == "replication" {
				return d
			}
		}
		t.Fatalf("event stream ended: %v", sc.Err())
		return ""
	}
	first := next()
	f.mu.Lock()
	f.groups[0].LastPointAge = 2 // the lag moves: no event
	f.mu.Unlock()
	time.Sleep(1500 * time.Millisecond) // over a digest check; nothing to wait for
	f.mu.Lock()
	f.replicas[0].Tests = map[string]string{"vm1": "vm1-test"}
	f.mu.Unlock()
	// The next event is the test failover's, not one for the lag: a lag
	// event would carry a digest older than the current one.
	if second, want := next(), `{"digest":"`+c.replicationDigest()+`"}`; second == first || second != want {
		t.Fatalf("after the test failover: event %s, want %s (first %s)", second, want, first)
	}
}

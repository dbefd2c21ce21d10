package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/repo"
)

// TestPointCacheBounds: the cache keeps at most its bound of idle points
// (the oldest closed first), hands each to one taker, closes a policy's
// on drop, expires the unused ones, and closes everything at shut.
func TestPointCacheBounds(t *testing.T) {
	c := newPointCache(4, 100*time.Millisecond, time.Now)
	var closed atomic.Int32
	mk := func(policy string, n byte) *idlePoint {
		return &idlePoint{policy: policy, id: repo.ID{n}, close: func() { closed.Add(1) }}
	}
	for i := range byte(6) {
		c.put(mk("p", i+1))
	}
	if c.kept() != 4 || closed.Load() != 2 {
		t.Fatalf("after 6 puts: kept %d, closed %d", c.kept(), closed.Load())
	}
	if c.take("p", repo.ID{1}) != nil || c.take("q", repo.ID{3}) != nil {
		t.Fatal("took a closed point or another policy's")
	}
	if p := c.take("p", repo.ID{3}); p == nil || c.take("p", repo.ID{3}) != nil {
		t.Fatalf("take: %v, a second taker got one too", p)
	}
	c.put(mk("q", 9))
	c.drop("p", repo.ID{4})
	if c.kept() != 3 || closed.Load() != 3 {
		t.Fatalf("after dropping one point: kept %d, closed %d", c.kept(), closed.Load())
	}
	c.drop("p", repo.ID{})
	if c.kept() != 1 || closed.Load() != 5 {
		t.Fatalf("after dropping the policy: kept %d, closed %d", c.kept(), closed.Load())
	}
	for deadline := time.Now().Add(10 * time.Second); c.kept() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an idle point never expired")
		}
	}
	c.put(mk("p", 7))
	c.shut()
	c.put(mk("p", 8))
	if c.kept() != 0 || closed.Load() != 8 {
		t.Fatalf("after shut: kept %d, closed %d (want every point closed)", c.kept(), closed.Load())
	}
}

// TestFileBrowserKeepsPoints: the file routes of a policy's point open it
// once for many requests (concurrent ones each get a session of their
// own); a prune of the repository is not held off by the idle point's
// read lock (it is closed first), and a point retention forgets is
// closed and answers 404.
func TestFileBrowserKeepsPoints(t *testing.T) {
	h := startHost(t, tempDir(t), Options{PointIdle: time.Hour})
	h.disk(t, "vm1", 2*mib, 3)
	h.create(t, wire.Policy{Name: "p", Sources: wire.PolicySources{Disks: []string{"vm1"}}, Schedule: "@yearly",
		Repository: wire.PolicyRepository{Location: initRepo(t), Password: password}, Retention: wire.PolicyRetention{Last: 1}})
	first := runBackup(t, h)
	files := func(id string) int {
		st, body := h.raw(t, "GET", "/v1/policies/p/points/"+id+"/files?path=/", "")
		if st == http.StatusOK && !json.Valid(body) {
			t.Fatalf("listing %s", body)
		}
		return st
	}
	for range 5 {
		if st := files(first); st != http.StatusOK {
			t.Fatalf("listing of the point: %d", st)
		}
	}
	if n, k := h.s.pointOpens.Load(), h.s.points.kept(); n != 1 || k != 1 {
		t.Fatalf("5 listings opened the point %d times, %d kept", n, k)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if st := files(first[:12]); st != http.StatusOK {
				t.Errorf("concurrent listing: %d", st)
			}
		})
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // the lock wait is 10 min
	defer cancel()
	run, err := h.c.RunPolicy(ctx, "p", "prune")
	if err != nil {
		t.Fatal(err)
	}
	if j, err := h.c.WaitJob(ctx, run.Jobs[0]); err != nil || j.State != wire.JobSucceeded {
		t.Fatalf("prune with the point kept open: %+v %v", j, err)
	}
	if st := files(first); st != http.StatusOK || h.s.points.kept() != 1 {
		t.Fatalf("listing after the prune: %d, %d kept", st, h.s.points.kept())
	}
	runBackup(t, h) // retention (last 1) forgets the first point
	if k := h.s.points.kept(); k != 0 {
		t.Fatalf("%d points kept after retention forgot the only one", k)
	}
	if st := files(first); st != http.StatusNotFound {
		t.Fatalf("listing of a forgotten point: %d", st)
	}
}

// runBackup runs the policy p's backup and returns its point's ID.
func runBackup(t *testing.T, h *host) string {
	t.Helper()
	ctx := context.Background()
	run, err := h.c.RunPolicy(ctx, "p", "")
	if err != nil {
		t.Fatal(err)
	}
	j, err := h.c.WaitJob(ctx, run.Jobs[0])
	if err != nil || j.State != wire.JobSucceeded {
		t.Fatalf("backup %+v %v", j, err)
	}
	var sum struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(j.Summary, &sum); err != nil || sum.ID == "" {
		t.Fatalf("summary %s: %v", j.Summary, err)
	}
	return sum.ID
}

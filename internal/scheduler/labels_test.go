package scheduler

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
)

// TestLabelSources: disks labelled through the API (PUT and PATCH) are
// a policy's sources by selector, together with a name; the policy's
// status (what the console's protected view shows) follows a label
// change at once; a run backs up exactly the selected disks; a deleted
// disk's labels do not pass to a new disk of its name; a bad selector
// or label is refused.
func TestLabelSources(t *testing.T) {
	h := startHost(t, tempDir(t), Options{})
	ctx := context.Background()
	for i, n := range []string{"db1", "db2", "web1", "named"} {
		h.disk(t, n, mib, uint64(i+1))
	}
	if _, err := h.c.SetDiskLabels(ctx, "db1", map[string]string{"tier": "gold", "env": "prod"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.SetDiskLabels(ctx, "db2", map[string]string{"tier": "gold", "env": "dev"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"bad key":"x"}`, `{"k":"<script>"}`, `["tier"]`} {
		if st, body := h.raw(t, "PUT", "/v1/disks/web1/labels", bad); st != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s", bad, st, body)
		}
	}
	loc := initRepo(t)
	p := wire.Policy{Name: "gold", Sources: wire.PolicySources{Labels: []string{"tier=gold,env!=dev"}, Disks: []string{"named"}},
		Schedule: "@yearly", Repository: wire.PolicyRepository{Location: loc, Password: password}, MaxConcurrent: 2}
	bad := p
	bad.Name, bad.Sources.Labels = "bad", []string{"tier=gold,"}
	if _, err := h.c.CreatePolicy(ctx, bad); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("bad selector: %v", err)
	}
	h.create(t, p)
	sourcesAre(t, h, "gold", "db1", "named")
	// web1 joins by a PATCH; db1 leaves when its env label is removed
	// and another set (env absent still passes env!=dev, so tier goes).
	if _, err := h.c.PatchDiskLabels(ctx, "web1", map[string]string{"tier": "gold"}, nil); err != nil {
		t.Fatal(err)
	}
	if d, err := h.c.PatchDiskLabels(ctx, "db1", map[string]string{"zone": "a"}, []string{"tier"}); err != nil || d.Labels["zone"] != "a" || d.Labels["env"] != "prod" || d.Labels["tier"] != "" {
		t.Fatalf("patched db1: %+v %v", d, err)
	}
	sourcesAre(t, h, "gold", "named", "web1")
	gold, err := h.c.SelectDisks(ctx, "tier=gold")
	if err != nil || len(gold) != 2 || gold[0].Name != "db2" || gold[1].Name != "web1" {
		t.Fatalf("disks tier=gold: %+v %v", gold, err)
	}
	run, err := h.c.RunPolicy(ctx, "gold", "")
	if err != nil || len(run.Jobs) != 2 {
		t.Fatalf("run: %+v %v", run, err)
	}
	list := waitJobs(t, h, client.JobFilter{Policy: "gold"}, 60*time.Second, func(l []client.Job) bool {
		return count(l, wire.JobSucceeded) == 2
	})
	var got []string
	for _, j := range list {
		got = append(got, j.Source)
	}
	if slices.Sort(got); !slices.Equal(got, []string{"named", "web1"}) {
		t.Fatalf("backed up %v", got)
	}
	if err := h.c.DeleteDisk(ctx, "web1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateDisk(ctx, client.CreateDiskRequest{Name: "web1", Size: mib}); err != nil {
		t.Fatal(err)
	}
	if d, err := h.c.Disk(ctx, "web1"); err != nil || len(d.Labels) != 0 {
		t.Fatalf("new web1 has labels: %+v %v", d, err)
	}
	sourcesAre(t, h, "gold", "named")
}

func sourcesAre(t *testing.T, h *host, policy string, want ...string) {
	t.Helper()
	p, err := h.c.Policy(context.Background(), policy)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Status.Sources {
		got = append(got, s.Disk)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("policy %s selects %v, want %v", policy, got, want)
	}
}

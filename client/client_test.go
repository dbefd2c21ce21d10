package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

func TestSentinels(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "vm1", "s1", ""); err != nil {
		t.Fatal(err)
	}
	x, err := e.Host.Open(ctx, "vm1@s1")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	cases := []struct {
		name string
		call func() error
		want []error
	}{
		{"disk not found", func() error { _, err := c.Disk(ctx, "nope"); return err }, []error{client.ErrDiskNotFound, client.ErrNotFound}},
		{"snapshot not found", func() error { _, err := c.Snapshot(ctx, "vm1", "nope"); return err }, []error{client.ErrSnapshotNotFound, client.ErrNotFound}},
		{"task not found", func() error { _, err := c.Task(ctx, "nope"); return err }, []error{client.ErrTaskNotFound, client.ErrNotFound}},
		{"disk exists", func() error {
			_, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 512})
			return err
		}, []error{client.ErrExists}},
		{"snapshot exists", func() error { _, err := c.CreateSnapshot(ctx, "vm1", "s1", ""); return err }, []error{client.ErrExists}},
		{"change ID", func() error { _, err := c.QueryChangedAreas(ctx, "vm1", "s1", "x/1", 0); return err }, []error{client.ErrChangeIDInvalid}},
		{"busy", func() error { _, err := c.DeleteSnapshot(ctx, "vm1", "s1"); return err }, []error{client.ErrBusy}},
		{"out of range", func() error { _, err := c.QueryChangedAreas(ctx, "vm1", "s1", "*", 1<<40); return err }, []error{client.ErrOutOfRange}},
		{"invalid", func() error { _, err := c.GrowDisk(ctx, "vm1", -1); return err }, []error{client.ErrInvalidRequest}},
	}
	for _, tc := range cases {
		err := tc.call()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status < 400 {
			t.Errorf("%s: %v is no *client.Error", tc.name, err)
		}
		for _, w := range tc.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v is not %v", tc.name, err, w)
			}
		}
		if errors.Is(err, client.ErrUnauthorized) {
			t.Errorf("%s: %v matches ErrUnauthorized", tc.name, err)
		}
	}
}

// TestPlainErrors: answers without a problem document (a proxy in the
// way) still map to sentinels by status.
func TestPlainErrors(t *testing.T) {
	status := http.StatusUnauthorized
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", status)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]error{401: client.ErrUnauthorized, 409: client.ErrBusy, 503: client.ErrUnavailable, 502: client.ErrInternal, 400: client.ErrInvalidRequest} {
		status = code
		if _, err := c.ListDisks(context.Background()); !errors.Is(err, want) {
			t.Errorf("%d: %v, want %v", code, err, want)
		}
	}
}

func TestNewRejectsBadHosts(t *testing.T) {
	for _, h := range []string{"ftp://x", "unix://", "://"} {
		if _, err := client.New(h, client.Options{}); err == nil {
			t.Errorf("%q accepted", h)
		}
	}
	if _, err := client.New("https://h:1", client.Options{CAFile: "/nonexistent"}); err == nil {
		t.Error("missing CA accepted")
	}
}

func TestWaitTask(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 1 << 20})
	c.CreateSnapshot(ctx, "vm1", "s1", "")
	task, err := c.DeleteSnapshot(ctx, "vm1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.WaitTask(ctx, task.ID)
	if err != nil || done.State != client.TaskDone {
		t.Fatalf("%+v %v", done, err)
	}
	if d, err := c.Disk(ctx, "vm1"); err != nil || len(d.Snapshots) != 0 || d.Consolidation != nil {
		t.Fatalf("after consolidation %+v %v", d, err)
	}
}

// TestCreateTicketTTL: a ticket's TTL goes to the host in whole seconds,
// rounded up (a sub-second TTL must not become 0, the host's 24-hour
// default); a negative one is refused before any request.
func TestCreateTicketTTL(t *testing.T) {
	var got []int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TTLSeconds int64 `json:"ttlSeconds"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		got = append(got, req.TTLSeconds)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":"t1","export":"vm"}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, time.Hour} {
		if _, err := c.CreateTicket(context.Background(), "vm", "", ttl); err != nil {
			t.Fatalf("ttl %v: %v", ttl, err)
		}
	}
	if want := []int64{0, 1, 1, 2, 3600}; !slices.Equal(got, want) {
		t.Fatalf("ttlSeconds sent %v, want %v", got, want)
	}
	if _, err := c.CreateTicket(context.Background(), "vm", "", -time.Second); !errors.Is(err, client.ErrInvalidRequest) || len(got) != 5 {
		t.Fatalf("negative ttl: %v (%d requests)", err, len(got))
	}
}

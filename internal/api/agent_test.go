package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

// TestDiskAgent: a disk's guest agent socket is set with PATCH, shown by
// GET and the list, forgotten with "", and bad values are 400s that
// change nothing.
func TestDiskAgent(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: mib}); err != nil {
		t.Fatal(err)
	}
	const sock = "/run/vm1/qga.sock"
	if d, err := c.SetDiskAgent(ctx, "vm1", sock); err != nil || d.Agent != sock {
		t.Fatalf("set: %+v %v", d, err)
	}
	if d, err := c.Disk(ctx, "vm1"); err != nil || d.Agent != sock {
		t.Fatalf("get: %+v %v", d, err)
	}
	if l, err := c.ListDisks(ctx); err != nil || len(l) != 1 || l[0].Agent != sock {
		t.Fatalf("list: %+v %v", l, err)
	}
	cases := []struct {
		name, path, body string
		status           int
	}{
		{"relative", "/v1/disks/vm1", `{"agent":"qga.sock"}`, 400},
		{"not clean", "/v1/disks/vm1", `{"agent":"/run/../qga.sock"}`, 400},
		{"too long", "/v1/disks/vm1", `{"agent":"/` + strings.Repeat("a", 107) + `"}`, 400},
		{"control character", "/v1/disks/vm1", `{"agent":"/run/q\nga"}`, 400},
		{"unknown field", "/v1/disks/vm1", `{"agnet":"/run/x"}`, 400},
		{"no such disk", "/v1/disks/nope", `{"agent":"/run/x"}`, 404},
	}
	for _, tc := range cases {
		var p wire.Problem
		if got := raw(t, e, "PATCH", tc.path, tc.body, &p); got != tc.status || p.Status != tc.status {
			t.Errorf("%s: %d %+v, want %d", tc.name, got, p, tc.status)
		}
	}
	// An empty body changes nothing; "" forgets the socket.
	var d wire.Disk
	if got := raw(t, e, "PATCH", "/v1/disks/vm1", `{}`, &d); got != 200 || d.Agent != sock {
		t.Fatalf("empty patch: %d %+v", got, d)
	}
	if d, err := c.SetDiskAgent(ctx, "vm1", ""); err != nil || d.Agent != "" {
		t.Fatalf("clear: %+v %v", d, err)
	}
	if _, err := c.SetDiskAgent(ctx, "nope", sock); !errors.Is(err, client.ErrDiskNotFound) {
		t.Fatalf("missing disk: %v", err)
	}
}

package api_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/disk"
)

// TestDatastoreSpace: GET /v1/datastore and /v1/host report capacity,
// use and the disks' provisioned bytes; with the datastore above the
// soft threshold they, and /metrics, carry the warning; below it, none.
// GET /v1/host advertises the offloads.
func TestDatastoreSpace(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	for i, size := range []int64{64 << 20, 1 << 40} { // 1 TiB thin: overcommitted on any test machine
		if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: fmt.Sprint("vm", i), Size: size}); err != nil {
			t.Fatal(err)
		}
	}
	// A disk the host has not opened counts too, and stays closed.
	closed, err := e.Host.Datastore().Create("closed", 1<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	sp, err := c.Datastore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range e.Host.OpenDisks() {
		if ds.Name == "closed" {
			t.Fatal("measuring the datastore opened a disk")
		}
	}
	if sp.Capacity <= 0 || sp.Used <= 0 || sp.Free <= 0 || sp.Free > sp.Capacity || sp.Provisioned != 64<<20+1<<40+1<<20 || sp.Disks != 3 {
		t.Fatalf("space %+v", sp)
	}
	if want := float64(sp.Provisioned) / float64(sp.Capacity); sp.Overcommit != want || sp.WarnRatio != 0.8 {
		t.Fatalf("overcommit %v (want %v), threshold %v", sp.Overcommit, want, sp.WarnRatio)
	}
	over := sp.UsedRatio >= 0.8 // a nearly full test machine: the warning is due
	if (sp.Warning != "") != over {
		t.Fatalf("used %.3f of capacity, threshold 0.8, warning %q", sp.UsedRatio, sp.Warning)
	}
	// A threshold below the use now: warned everywhere.
	if err := e.Host.SetSpaceWarn(max(sp.UsedRatio/2, 1e-6)); err != nil {
		t.Fatal(err)
	}
	hi, err := c.Host(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hi.Space == nil || !strings.Contains(hi.Space.Warning, "full") || hi.Space.Provisioned != sp.Provisioned {
		t.Fatalf("host space %+v", hi.Space)
	}
	body := metrics(t, e)
	for _, want := range []string{"blockwise_datastore_space_warning 1", fmt.Sprintf("blockwise_datastore_provisioned_bytes %g", float64(sp.Provisioned)),
		"blockwise_datastore_capacity_bytes "} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if err := e.Host.SetSpaceWarn(1); err != nil {
		t.Fatal(err)
	}
	if sp, _ := c.Datastore(ctx); sp.Warning != "" && sp.UsedRatio < 1 {
		t.Fatalf("warning below the threshold: %q", sp.Warning)
	}
	if !strings.Contains(metrics(t, e), "blockwise_datastore_space_warning 0") {
		t.Error("metrics still warn below the threshold")
	}
	for _, bad := range []float64{0, -1, 1.5} {
		if e.Host.SetSpaceWarn(bad) == nil {
			t.Errorf("threshold %v accepted", bad)
		}
	}
	o := hi.Offload
	if o == nil || o.UnmapGranularity != 4096 || o.CompareAndWriteMax != 4096 || o.CompareAndWriteAlign != 512 {
		t.Fatalf("offload %+v", o)
	}
}

func metrics(t *testing.T, e *apitest.Env) string {
	t.Helper()
	resp, err := unixHTTP(e).Get("http://x/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func unixHTTP(e *apitest.Env) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.Sock)
	}}}
}

package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

// fuzzRoutes are the routes whose JSON bodies FuzzAPIBodies sends, each
// with a valid body as seed. Creating and growing disks and running
// policies are left out: a fuzzed size or job would allocate or work for
// real, which is not the decoder's business.
var fuzzRoutes = []struct{ method, path, seed string }{
	{"POST", "/v1/disks/vm/snapshots", `{"id":"s2","description":"d"}`},
	{"POST", "/v1/disks/vm/clone", `{"name":"c1","snapshot":"s1","linked":true}`},
	{"POST", "/v1/disks/vm/copy", `{"source":{"disk":"vm","snapshot":"s1","offset":0},"offset":4096,"length":512}`},
	{"POST", "/v1/disks/vm/lease", `{"ttl":"30s"}`},
	{"POST", "/v1/disks/vm/tickets", `{"ttl":"1m","readOnly":true}`},
	{"POST", "/v1/disks/vm/snapshots/s1/tickets", `{}`},
	{"POST", "/v1/disks/vm/compare-and-write", `{"offset":0,"expected":"AAAA","new":"AQID"}`},
	{"POST", "/v1/policies", `{"name":"p","sources":{"disks":["vm"]},"schedule":"@daily","repository":"/nonexistent"}`},
	{"PUT", "/v1/policies/p", `{"name":"p","schedule":"@every 15m"}`},
	{"POST", "/v1/console/links", `{}`},
}

// FuzzAPIBodies sends fuzzed JSON bodies to the API's routes on a running
// host: every answer is a success or a client error with a problem
// document (RFC 9457), never a server error, a panic or a hang.
func FuzzAPIBodies(f *testing.F) {
	for i, r := range fuzzRoutes {
		f.Add(uint8(i), []byte(r.seed))
		f.Add(uint8(i), []byte(`{"`+strings.Repeat("a", 3)+`":1}`))
	}
	f.Add(uint8(0), []byte(`null`))
	f.Add(uint8(6), []byte(`{"offset":-1,"expected":"","new":""}`))
	e := apitest.Start(f)
	ctx := context.Background()
	if _, err := e.Client.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm", Size: 1 << 20}); err != nil {
		f.Fatal(err)
	}
	if _, err := e.Client.CreateSnapshot(ctx, "vm", "s1", ""); err != nil {
		f.Fatal(err)
	}
	hc := unixClient(e)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req, _ := http.NewRequest(r.method, "http://x"+r.path, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, resp.StatusCode, data)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && !strings.Contains(ct, "problem+json") {
			t.Fatalf("%s %s: %d without a problem document (%s): %s", r.method, r.path, resp.StatusCode, ct, data)
		}
	})
}

package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

// The file routes are authenticated like every other (a request that
// does not come over the 0600 unix socket needs a token), and a host
// started without a repository serves no restore points: 404
// point-not-found naming the flag. (The routes with a repository:
// cmd/blockwise TestFileRestoreS3AndAPI.)
func TestFileRoutesWithoutRepository(t *testing.T) {
	e := apitest.Start(t)
	unix := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.Sock)
	}}}
	for _, path := range []string{"/v1/points", "/v1/points/latest/files?path=/part1", "/v1/policies/p/points/latest/files?path=/"} {
		rec := httptest.NewRecorder()
		e.Server.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token off the socket: %d", path, rec.Code)
		}
		resp, err := unix.Get("http://host" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p wire.Problem
		json.Unmarshal(body, &p)
		want := wire.ProblemPointNotFound
		if strings.HasPrefix(path, "/v1/policies/") { // a host without policies (their files: cmd/blockwise TestConsolePages)
			want = wire.ProblemPolicyNotFound
		}
		if resp.StatusCode != http.StatusNotFound || p.Type != want {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
}

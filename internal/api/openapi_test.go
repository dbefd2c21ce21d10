package api_test

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
)

// TestOpenAPIMatchesRoutes: every route the server registers is in
// api/openapi.json and every operation there is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := apitest.Start(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(wire.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		if strings.HasPrefix(path, "/v1/replica") {
			continue // mounted by internal/replica: TestOpenAPIReplicationRoutes there
		}
		for method := range ops {
			if method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	served := e.Server.Routes()
	sort.Strings(documented)
	sort.Strings(served)
	if strings.Join(documented, "\n") != strings.Join(served, "\n") {
		t.Fatalf("openapi.json and routes differ:\ndocumented:\n%s\nserved:\n%s",
			strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}
	got, err := e.Client.OpenAPI(context.Background())
	if err != nil || !json.Valid(got) || !strings.Contains(string(got), `"openapi"`) {
		t.Fatalf("served document: %v", err)
	}
}

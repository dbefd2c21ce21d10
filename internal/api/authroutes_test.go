package api_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/testcert"
)

// TestEveryRouteNeedsToken sends a request without a token to every
// operation of openapi.json over TCP: each must be refused with 401, so
// a route added later (the snapshot root, leaves, labels, disk
// properties, ...) cannot slip past the authentication by mistake.
func TestEveryRouteNeedsToken(t *testing.T) {
	e := apitest.Start(t)
	pki := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}})
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	b, err := os.ReadFile("../../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for p, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			url := "https://" + l.Addr().String() + param.ReplaceAllString(p, "x")
			req, _ := http.NewRequest(strings.ToUpper(method), url, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, p, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d, want 401", strings.ToUpper(method), p, resp.StatusCode)
			}
			n++
		}
	}
	t.Logf("%d operations refused", n)
	if n < 20 {
		t.Fatalf("only %d operations in openapi.json", n)
	}
}

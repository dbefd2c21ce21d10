package api_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/testcert"
)

// TestConsoleSessions: over TCP the console needs a login; a token or a
// one-time link (used twice: refused the second time) opens a session
// whose cookie is Secure, HttpOnly and SameSite=Strict; state-changing
// requests need the CSRF token and the same origin; revoking the token
// ends the session; over the unix socket the console needs nothing.
func TestConsoleSessions(t *testing.T) {
	e := apitest.Start(t)
	pki := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}})
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	base := "https://" + l.Addr().String()
	_, secret, err := api.OpenTokens(e.Dir).Create("console")
	if err != nil {
		t.Fatal(err)
	}
	newBrowser := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	do := func(hc *http.Client, method, path, body string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	b := newBrowser()
	if resp, _ := do(b, "GET", "/", "", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("GET / without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := do(b, "GET", "/console/login", "", nil); resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) {
		t.Fatalf("login page: %d", resp.StatusCode)
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if resp, _ := do(b, "POST", "/console/login", "token="+url.QueryEscape(secret+"x"), form); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	// A peer's replication token reaches the replica routes only: it
	// opens no console session (which would reach every route).
	_, scoped, err := api.OpenTokens(e.Dir).CreateScoped("peer", []string{api.ScopeReplication})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := do(b, "POST", "/console/login", "token="+url.QueryEscape(scoped), form); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("scoped token: %d %v", resp.StatusCode, resp.Cookies())
	}
	resp, _ := do(b, "POST", "/console/login", "token="+url.QueryEscape(secret), form)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
	}
	if c := resp.Cookies()[0]; c.Name != api.SessionCookie || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
	if resp, body := do(b, "GET", "/", "", nil); resp.StatusCode != 200 || !strings.Contains(body, "app.js") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("console page: %d %v", resp.StatusCode, resp.Header)
	}
	_, sess := do(b, "GET", "/console/session", "", nil)
	csrf := strings.Split(sess, `"`)[3]
	post := `{"name":"vm1","size":1048576}`
	if resp, _ := do(b, "POST", "/v1/disks", post, nil); resp.StatusCode != 403 {
		t.Fatalf("POST without CSRF: %d", resp.StatusCode)
	}
	if resp, _ := do(b, "POST", "/v1/disks", post, map[string]string{api.CSRFHeader: "nope"}); resp.StatusCode != 403 {
		t.Fatalf("POST with a wrong CSRF token: %d", resp.StatusCode)
	}
	if resp, _ := do(b, "POST", "/v1/disks", post, map[string]string{api.CSRFHeader: csrf, "Origin": "https://evil.example"}); resp.StatusCode != 403 {
		t.Fatalf("cross-site POST: %d", resp.StatusCode)
	}
	if resp, body := do(b, "POST", "/v1/disks", post, map[string]string{api.CSRFHeader: csrf}); resp.StatusCode != 201 {
		t.Fatalf("POST with CSRF: %d %s", resp.StatusCode, body)
	}

	// A one-time link, made over the unix socket, works once.
	link, err := e.Client.ConsoleLink(t.Context())
	if err != nil || !strings.HasPrefix(link.Path, "/console/login?code=") {
		t.Fatalf("link %+v %v", link, err)
	}
	b2 := newBrowser()
	if resp, _ := do(b2, "GET", link.Path, "", nil); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("link: %d", resp.StatusCode)
	}
	if resp, _ := do(b2, "GET", "/v1/disks", "", nil); resp.StatusCode != 200 {
		t.Fatalf("session from the link: %d", resp.StatusCode)
	}
	if resp, _ := do(newBrowser(), "GET", link.Path, "", nil); resp.StatusCode != 401 {
		t.Fatalf("link used twice: %d", resp.StatusCode)
	}

	// Revoking the token ends its sessions.
	if err := api.OpenTokens(e.Dir).Revoke("console"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := do(b, "GET", "/v1/disks", "", nil); resp.StatusCode != 401 {
		t.Fatalf("after revoke: %d", resp.StatusCode)
	}

	// The unix socket: no login; a cross-site POST is still refused.
	var disks []any
	if st := raw(t, e, "GET", "/", "", nil); st != 200 {
		t.Fatalf("GET / over the socket: %d", st)
	}
	if st := raw(t, e, "GET", "/v1/disks", "", &disks); st != 200 {
		t.Fatalf("socket: %d", st)
	}
	hc := unixClient(e)
	req, _ := http.NewRequest("POST", "http://localhost/v1/disks", strings.NewReader(`{"name":"vm2","size":1048576}`))
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("cross-site over the socket: %v %v", resp, err)
	}
}

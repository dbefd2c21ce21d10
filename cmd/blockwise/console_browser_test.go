package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
	"github.com/blockwise/blockwise/internal/testcert"
)

const chromiumPath = "/usr/bin/chromium"

// browser starts one headless Chromium (fresh profile) for a test.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium missing under CI: %v", err)
		}
		t.Skip("chromium not installed (scripts/setup.sh installs it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", "new"), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("ignore-certificate-errors", true), // the test CA's certificate
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser under the test's lifetime
		t.Fatal(err)
	}
	return ctx
}

// step runs browser actions with a deadline.
func step(t *testing.T, bctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// textOf reads an element's text.
func textOf(t *testing.T, bctx context.Context, sel chromedp.CSS) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// consoleHost is `blockwise serve` with the API on TCP+TLS, a token, a
// repository and a disk with data.
func consoleHost(t *testing.T) (e *e2e, base, secret string) {
	t.Helper()
	needTools(t, "qemu-io", "qemu-img")
	pki := testcert.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e = &e2e{d: startServe(t, "--api-tcp", addr, "--api-tls-cert", pki.ServerCert, "--api-tls-key", pki.ServerKey),
		repo: filepath.Join(t.TempDir(), "repo")}
	e.cli = cli{dir: e.d.dir, combined: true}
	e.env = []string{"BLOCKWISE_REPO=" + e.repo, "BLOCKWISE_PASSWORD=correct horse", "BLOCKWISE_PASSWORD_FILE="}
	// Small packs: uploads (throttled by the policy) pace the copy, so
	// its progress moves while the page watches.
	be, err := local.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "correct horse", repo.Options{PackSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	e.checkAfterTest(t)
	secret = strings.TrimSpace(e.must(t, "token", "create", "browser"))
	e.must(t, "disk", "create", "vm1", "--size", "16M", "--granularity", "64K")
	e.apply(t, "vm1", randomWrites(repotest.Rand(seed(t)), 16<<20, 60, 1<<20))
	return e, "https://" + addr, secret
}

func evalJS[T any](t *testing.T, bctx context.Context, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// TestConsoleBrowser drives the web console in headless Chromium against
// a real `blockwise serve` on TCP+TLS: a wrong token is refused, a token
// logs in (a Secure, HttpOnly, SameSite=Strict cookie), a state-changing
// request without the CSRF token is refused, the overview shows the
// disk, a policy created in the page (selecting the disk by label) runs now with its progress updating
// live without a reload, the point appears on the source page and the
// grid, a restore started from the page restores the disk's bytes
// (qemu-img compare), markup in a name shows as text, and the pages
// render 1,000 disks.
func TestConsoleBrowser(t *testing.T) {
	e, base, secret := consoleHost(t)
	ctx := browser(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// A wrong token is refused: the login page again, no cookie.
	step(t, ctx, "wrong token", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), "bw_wrong"), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#login-error")))
	if c := sessionCookie(t, ctx, base); c != nil {
		t.Fatalf("a wrong token got a cookie: %+v", c)
	}
	// The token logs in.
	step(t, ctx, "login", chromedp.SendKeys(css("#token"), secret), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#ov-disks")))
	if n := textOf(t, ctx, css("#ov-disks")); n != "1" {
		t.Fatalf("overview shows %q disks", n)
	}
	c := sessionCookie(t, ctx, base)
	if c == nil || !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v", c)
	}
	step(t, ctx, "disk row", chromedp.WaitVisible(css(`tr.src[data-disk="vm1"] a.source`)))

	// CSRF: the same session without the token is refused, with it served.
	if st := evalJS[int](t, ctx, `fetch("/v1/disks",{method:"POST",credentials:"same-origin",headers:{"Content-Type":"application/json"},body:JSON.stringify({name:"nocsrf",size:1048576})}).then(r=>r.status)`); st != 403 {
		t.Fatalf("POST without CSRF token: %d", st)
	}
	if st := evalJS[int](t, ctx, `fetch("/v1/jobs",{credentials:"same-origin"}).then(r=>r.status)`); st != 200 {
		t.Fatalf("GET with the session: %d", st)
	}
	if out := e.must(t, "disk", "list"); strings.Contains(out, "nocsrf") {
		t.Fatal("a request without CSRF token created a disk")
	}

	// A policy created in the page, selecting vm1 by its label, then
	// throttled so its run lasts seconds.
	e.must(t, "disk", "label", "vm1", "tier=web")
	step(t, ctx, "create policy", chromedp.Navigate(base+"/#/policies"), chromedp.WaitVisible(css("#pc-name")),
		chromedp.SendKeys(css("#pc-name"), "web"), chromedp.SendKeys(css("#pc-labels"), "tier=web,env!=dev"),
		chromedp.SendKeys(css("#pc-repo"), e.repo), chromedp.SendKeys(css("#pc-password"), "correct horse"),
		chromedp.SendKeys(css("#pc-keep-last"), "5"), chromedp.Click(css("#pc-create")),
		chromedp.WaitVisible(css(`tr[data-policy="web"]`)))
	if src := textOf(t, ctx, css(`tr[data-policy="web"] td:nth-child(2)`)); src != "label:tier=web,env!=dev" {
		t.Fatalf("policy sources shown as %q", src)
	}
	e.must(t, "policy", "edit", "web", "--limit-upload", "3072")
	// 6 MiB that neither compress nor dedupe: at 3 MiB/s the copy lasts
	// at least 2 s whatever the seed's writes left (they are only 40%
	// random bytes; with few of them the run ended before the page drew
	// a second progress value: 1 run in 7 failed).
	payload := make([]byte, 6<<20)
	repotest.Fill(repotest.Rand(seed(t)+1), payload)
	e.apply(t, "vm1", []write{{off: 8 << 20, n: int64(len(payload)), srcBytes: payload}})
	// Run now; the progress bar moves without a reload.
	evalJS[any](t, ctx, `window.__sameDocument = 1`)
	step(t, ctx, "run now", chromedp.Click(css(`button.run[data-policy="web"]`)), chromedp.WaitVisible(css(`#active progress`)))
	seen := map[string]bool{}
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		v := evalJS[string](t, ctx, `(document.querySelector("#active progress")||{}).value+"/"+document.querySelectorAll("#active tr[data-job]").length`)
		if strings.HasSuffix(v, "/0") && len(seen) > 0 {
			break
		}
		if !strings.HasPrefix(v, "undefined") && !strings.HasPrefix(v, "0/") {
			seen[v] = true
		}
	}
	if same := evalJS[int](t, ctx, `window.__sameDocument || 0`); len(seen) < 2 || same != 1 {
		t.Fatalf("live progress: values %v, same document %d", seen, same)
	}
	var jobs []client.Job
	e.jsonOut(t, &jobs, "job", "list", "--policy", "web")
	if len(jobs) != 1 || jobs[0].State != "succeeded" {
		t.Fatalf("run now: %+v", jobs)
	}
	// The point on the source page and the grid.
	step(t, ctx, "source page", chromedp.Navigate(base+"/#/source/vm1"),
		chromedp.WaitVisible(css(`tr.point[data-job="`+jobs[0].ID+`"] button.restore`)),
		chromedp.WaitVisible(css(`svg.chart polyline`)))
	if b := textOf(t, ctx, css(`tr.point[data-job="`+jobs[0].ID+`"] td.bottleneck`)); !regexp.MustCompile(`^[a-z]+ \d+%$`).MatchString(b) {
		t.Fatalf("the point's slowest phase shows as %q", b)
	}
	step(t, ctx, "grid", chromedp.Navigate(base+"/#/grid"),
		chromedp.WaitVisible(css(`tr[data-source="vm1"] a.cell.s-succeeded[href="#/job/`+jobs[0].ID+`"]`)))

	// A restore from the page, verified with qemu-img compare.
	restored := filepath.Join(t.TempDir(), "restored.raw")
	step(t, ctx, "restore", chromedp.Navigate(base+"/#/source/vm1"), chromedp.Click(css(`button.restore`)),
		chromedp.WaitVisible(css("#restore-file")), chromedp.SendKeys(css("#restore-file"), restored),
		chromedp.Click(css("#restore-go")), chromedp.WaitVisible(css("#job-state")))
	state := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if state = textOf(t, ctx, css("#job-state")); state == "succeeded" || state == "failed" {
			break
		}
	}
	if state != "succeeded" {
		t.Fatalf("restore job: %s\n%s", state, e.must(t, "job", "list", "--json"))
	}
	ref := filepath.Join(t.TempDir(), "ref.raw")
	e.reference(t, "vm1", ref)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", ref, restored).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v: %s", err, out)
	}

	// Instant recovery from the page: the job's log names the NBD URI and
	// the overlay line; the served point reads as the disk; cancel stops it.
	step(t, ctx, "serve point", chromedp.Navigate(base+"/#/source/vm1"), chromedp.Click(css(`button.serve`)),
		chromedp.WaitVisible(css("#job-state")))
	var uri string
	for deadline := time.Now().Add(20 * time.Second); uri == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		log := evalJS[string](t, ctx, `(document.querySelector("#job-log")||{}).textContent||""`)
		if i := strings.Index(log, "qemu-img create -f qcow2 -F raw -b '"); i >= 0 {
			uri = strings.SplitN(log[i+len("qemu-img create -f qcow2 -F raw -b '"):], "'", 2)[0]
		}
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", ref, uri).CombinedOutput(); uri == "" || err != nil {
		t.Fatalf("served point %q: %v: %s", uri, err, out)
	}
	step(t, ctx, "stop serving", chromedp.Click(css("button.cancel")))
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if state = textOf(t, ctx, css("#job-state")); state == "canceled" {
			break
		}
	}
	if state != "canceled" {
		t.Fatalf("serve-point job after cancel: %s", state)
	}

	// Markup in a name is text: a repository location full of it.
	evil := `/nonexistent/<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("x"), 0o600)
	e.must(t, "policy", "create", "evil", "--disk", "vm1", "--schedule", "@yearly", "--repo", evil, "--password-file", pw)
	step(t, ctx, "xss", chromedp.Navigate(base+"/#/"), chromedp.WaitVisible(css("#repos")))
	text := ""
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(text, "<script>") && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		text = textOf(t, ctx, css("#repos")) // the overview drawn with the new policy
	}
	if pwned := evalJS[bool](t, ctx, `window.pwned !== undefined || document.querySelector("#repos img, #repos script") !== null`); pwned || !strings.Contains(text, `<script>window.pwned=2</script>`) {
		t.Fatalf("markup in a name: pwned %v, text %q", pwned, text)
	}
	// No secret in a page or its data.
	noSecretIn(t, ctx, []string{"/console/api/overview", "/v1/policies", "/v1/jobs"}, "correct horse", secret)
	e.must(t, "policy", "rm", "evil")

	// 1,000 disks render on the overview and the grid.
	c1, err := client.New("unix://"+filepath.Join(e.d.dir, "api.sock"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var grp errgroup.Group
	grp.SetLimit(8)
	for i := range 999 {
		grp.Go(func() error {
			_, err := c1.CreateDisk(context.Background(), client.CreateDiskRequest{Name: fmt.Sprintf("d%04d", i), Size: 1 << 20})
			return err
		})
	}
	if err := grp.Wait(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	step(t, ctx, "1000 disks grid", chromedp.Navigate(base+"/#/grid"), chromedp.WaitVisible(css(`tr[data-source="d0998"]`)))
	grid := time.Since(start)
	start = time.Now()
	step(t, ctx, "1000 disks overview", chromedp.Navigate(base+"/#/"), chromedp.WaitVisible(css(`tr.src[data-disk="d0998"]`)))
	rows := evalJS[int](t, ctx, `document.querySelectorAll("tr.src").length`)
	t.Logf("1,000 disks: grid drawn in %s, overview in %s", grid.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if rows != 1000 {
		t.Fatalf("overview rows %d", rows)
	}
}

// sessionCookie returns the console's cookie in the browser, or nil.
func sessionCookie(t *testing.T, ctx context.Context, base string) *network.Cookie {
	t.Helper()
	var cookies []*network.Cookie
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	cookies = res.Cookies
	for _, c := range cookies {
		if c.Name == "bw_session" {
			return c
		}
	}
	return nil
}

// TestConsoleLinkCLI: `blockwise console` prints a one-time login URL on
// the API's TCP listener; it opens a session once.
func TestConsoleLinkCLI(t *testing.T) {
	pki := testcert.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := startServe(t, "--api-tcp", addr, "--api-tls-cert", pki.ServerCert, "--api-tls-key", pki.ServerKey)
	out := strings.Fields(d.must(t, "console"))
	if len(out) == 0 || !strings.HasPrefix(out[0], "https://"+addr+"/console/login?code=") {
		t.Fatalf("console printed %q", out)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i, want := range []int{http.StatusSeeOther, http.StatusUnauthorized} {
		resp, err := hc.Get(out[0])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (i == 0) != (len(resp.Cookies()) == 1) {
			t.Fatalf("use %d of the link: %d, cookies %v", i+1, resp.StatusCode, resp.Cookies())
		}
	}
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/fileres/imagetest"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// xssName is a file name that is markup: the file browser must show it
// as text (disk and group names cannot hold it: the API refuses them).
const xssName = `<img src=x onerror="window.pwned=1">.txt`

// TestConsolePages drives the console's replication, clone and file
// pages in one headless Chromium against one real `blockwise serve`
// (TCP+TLS, logged in with a token): its replication toward a second
// real host, on both hosts' pages (consoleReplication); a linked clone of a
// snapshot made from the page exists after and reads as the snapshot
// (qemu-img compare); a file downloaded from a point's file browser is
// the source file byte for byte, a folder's tar holds its files, and a
// file named with markup shows as text; state-changing requests of these
// pages without the CSRF token are refused, and a disk named <script>
// is refused by the API.
func TestConsolePages(t *testing.T) {
	imagetest.NeedTools(t, "mkfs.ext4", "e2fsck")
	e, base, secret := consoleHost(t)
	ctx := browser(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	consoleLogin(t, ctx, base, secret)
	waitJS := func(what, js string) { t.Helper(); pageHolds(t, ctx, what, js) }

	t.Run("replication", func(t *testing.T) { consoleReplication(t, ctx, e, base, secret) })

	t.Run("clone", func(t *testing.T) {
		e.must(t, "snapshot", "create", "vm1", "s1")
		e.apply(t, "vm1", []write{{cmd: "write -q -P 0x5a 0 1048576", off: 0, n: 1 << 20}}) // the clone is of s1, not now
		if st := csrfStatus(t, ctx, "POST", "/v1/disks/vm1/clone", `{"name":"nocsrf","snapshot":"s1","linked":true}`); st != 403 {
			t.Fatalf("clone without CSRF token: %d", st)
		}
		step(t, ctx, "clone page", chromedp.Navigate(base+"/#/clones"), chromedp.WaitVisible(css("#cl-src")))
		evalJS[any](t, ctx, `(s => { s.value = "vm1"; s.dispatchEvent(new Event("change")); })(document.getElementById("cl-src"))`)
		waitJS("snapshots listed", `document.querySelector('#cl-snap option[value="s1"]') !== null`)
		evalJS[any](t, ctx, `document.getElementById("cl-snap").value = "s1"`)
		step(t, ctx, "clone", chromedp.SendKeys(css("#cl-name"), "c1"), chromedp.Click(css("#cl-linked")),
			chromedp.Click(css("#cl-go")), chromedp.WaitVisible(css("#job-state")))
		waitJS("clone job", `(document.querySelector("#job-state")||{}).textContent === "succeeded"`)
		var d client.Disk
		if e.jsonOut(t, &d, "disk", "show", "c1"); d.Name != "c1" || d.Size != 16<<20 {
			t.Fatalf("clone: %+v", d)
		}
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", e.uri("vm1@s1"), e.uri("c1")).CombinedOutput(); err != nil {
			t.Fatalf("clone vs snapshot: %v: %s", err, out)
		}
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", e.uri("vm1"), e.uri("c1")).CombinedOutput(); err == nil {
			t.Fatalf("the clone equals the disk written after the snapshot: %s", out)
		}
	})

	t.Run("files", func(t *testing.T) {
		tree := filepath.Join(t.TempDir(), "tree")
		rng := repotest.Rand(seed(t) + 2)
		hello, small := make([]byte, 300<<10), make([]byte, 5000)
		repotest.Fill(rng, hello)
		repotest.Fill(rng, small)
		for name, data := range map[string][]byte{"hello.bin": hello, "sub/a.txt": small, "sub/" + xssName: []byte("markup\n")} {
			os.MkdirAll(filepath.Dir(filepath.Join(tree, name)), 0o755)
			if err := os.WriteFile(filepath.Join(tree, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		img := filepath.Join(t.TempDir(), "fs.img")
		imagetest.Ext(t, "ext4", tree, img, 16)
		e.must(t, "disk", "create", "fs1", "--size", "16M")
		putImage(t, img, e.uri("fs1"))
		pw := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(pw, []byte("correct horse"), 0o600)
		e.must(t, "policy", "create", "files", "--disk", "fs1", "--schedule", "@yearly", "--repo", e.repo, "--password-file", pw)
		var ended []client.Job
		if e.jsonOut(t, &ended, "policy", "run", "files", "--wait"); len(ended) != 1 || ended[0].State != "succeeded" {
			t.Fatalf("backup of fs1: %+v", ended)
		}
		step(t, ctx, "file browser", chromedp.Navigate(base+"/#/source/fs1"), chromedp.Click(css(`tr.point a.files`)),
			chromedp.Click(css(`tr.file[data-name="disk"] a.name`)), chromedp.WaitVisible(css(`tr.file[data-name="hello.bin"] a.download`)))
		sum := sha256.Sum256(hello)
		got := evalJS[string](t, ctx, `fetch(document.querySelector('tr.file[data-name="hello.bin"] a.download').href).then(r=>r.arrayBuffer()).then(b=>crypto.subtle.digest("SHA-256",b)).then(h=>Array.from(new Uint8Array(h)).map(x=>x.toString(16).padStart(2,"0")).join(""))`)
		if got != hex.EncodeToString(sum[:]) {
			t.Fatalf("downloaded hello.bin: sha256 %s, want %x", got, sum)
		}
		want := map[string][]byte{"sub/a.txt": small, "sub/" + xssName: []byte("markup\n")}
		checkTar(t, fetchBytes(t, ctx, `tr.file[data-name="sub"] a.tar`), maps.Clone(want))
		checkZip(t, fetchBytes(t, ctx, `tr.file[data-name="sub"] a.zip`), want)
		step(t, ctx, "sub", chromedp.Click(css(`tr.file[data-name="sub"] a.name`)), chromedp.WaitVisible(css(`tr.file[data-name="a.txt"]`)))
		name := evalJS[string](t, ctx, `Array.from(document.querySelectorAll("tr.file")).map(r=>r.dataset.name).find(n=>n.startsWith("<img"))||""`)
		shown := evalJS[string](t, ctx, `Array.from(document.querySelectorAll("tr.file .name")).map(e=>e.textContent).join("\n")`)
		if pwned := evalJS[bool](t, ctx, `window.pwned !== undefined || document.querySelector("#files img") !== null`); pwned || name != xssName || !strings.Contains(shown, xssName) {
			t.Fatalf("a file named with markup: pwned %v, row %q, names shown %q", pwned, name, shown)
		}
		// No secret in the file routes' answers (a listing, a problem),
		// the clone page's disks or the jobs of this test.
		var bk struct{ ID string }
		if err := json.Unmarshal(ended[0].Summary, &bk); err != nil || bk.ID == "" {
			t.Fatalf("the backup's summary %s: %v", ended[0].Summary, err)
		}
		noSecretIn(t, ctx, []string{"/v1/policies/files/points/" + bk.ID + "/files?path=/disk", "/v1/policies/files/points/nope/files?path=/",
			"/v1/policies/nope/points/" + bk.ID + "/files?path=/", "/console/api/disks", "/v1/jobs", "/v1/jobs/" + ended[0].ID + "/log"}, "correct horse", secret)
		if st := evalJS[int](t, ctx, `fetch("/v1/disks",{method:"POST",headers:{"Content-Type":"application/json","X-CSRF-Token":csrf},body:JSON.stringify({name:"<script>",size:1048576})}).then(r=>r.status)`); st != 400 {
			t.Fatalf("a disk named <script>: %d", st)
		}
	})
}

// consoleLogin logs the browser in to the console at base with a token.
// The first login of a fresh browser (its form's Origin is "null" under
// the console's no-referrer policy) is let in.
func consoleLogin(t *testing.T, ctx context.Context, base, secret string) {
	t.Helper()
	step(t, ctx, "login to "+base, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), secret), chromedp.Click(chromedp.CSS("#login")), chromedp.WaitVisible(chromedp.CSS("#ov-disks")))
}

// pageHolds polls a page expression until it is true.
func pageHolds(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !evalJS[bool](t, ctx, js); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s never held", what, js)
		}
	}
}

// clickNow clicks an element of a page the live updates redraw, the one
// there at that instant (a pointer click aims at where a button was).
func clickNow(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	pageHolds(t, ctx, "click "+sel, `(e => e !== null && (e.click(), true))(document.querySelector(`+jsQuote(sel)+`))`)
}

// csrfStatus is the status of a session request without the CSRF token.
func csrfStatus(t *testing.T, ctx context.Context, method, path, body string) int {
	t.Helper()
	return evalJS[int](t, ctx, `fetch(`+jsQuote(path)+`,{method:`+jsQuote(method)+`,credentials:"same-origin",headers:{"Content-Type":"application/json"},body:`+jsQuote(body)+`}).then(r=>r.status)`)
}

// noSecretIn fails the test when a secret is in the page's HTML or in
// the answer to one of the URLs (fetched with the page's session).
func noSecretIn(t *testing.T, ctx context.Context, urls []string, secrets ...string) {
	t.Helper()
	q := make([]string, len(urls))
	for i, u := range urls {
		q[i] = jsQuote(u)
	}
	all := evalJS[string](t, ctx, `Promise.all([`+strings.Join(q, ",")+`].map(u=>fetch(u).then(r=>r.text()))).then(a=>a.join()+document.documentElement.outerHTML)`)
	for i, s := range secrets {
		if s == "" || strings.Contains(all, s) {
			t.Fatalf("secret %d is in the page %s or an answer of %q", i, evalJS[string](t, ctx, `location.href`), urls)
		}
	}
}

// jsQuote makes s a JavaScript string literal.
func jsQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r < 0x20 || r == '<' || r == '>':
			b.WriteString(`\u00` + hex.EncodeToString([]byte{byte(r)}))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// fetchBytes downloads a link of the page (by CSS selector) in the
// browser, with its session, and hands the bytes to the test.
func fetchBytes(t *testing.T, ctx context.Context, sel string) []byte {
	t.Helper()
	b64 := evalJS[string](t, ctx, `fetch(document.querySelector(`+jsQuote(sel)+`).href).then(r=>r.arrayBuffer()).then(b=>{let s="";for(const x of new Uint8Array(b))s+=String.fromCharCode(x);return btoa(s)})`)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

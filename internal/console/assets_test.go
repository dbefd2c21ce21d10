package console

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// TestAssetsDrawText: every page draws names as text, the newer pages
// (replication, clones, files) as much as the first ones, because no
// asset hands a string to the browser's markup or code parsers, and
// every link the script makes is one of the console's own routes or a
// same-origin file URL with its parts escaped. The browser tests show
// names full of markup as text on the overview and the file browser;
// this holds the rule for the pages whose names the API already keeps
// free of markup (disks, snapshots, groups), where no browser test can
// put one.
func TestAssetsDrawText(t *testing.T) {
	sinks := []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
		"setTimeout(\"", "srcdoc", "javascript:", "DOMParser", "createContextualFragment"}
	inline := regexp.MustCompile(`(?i)<[^>]+\son[a-z]+=|<script>`) // an inline handler or script in a page (app.js: below)
	n := 0
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, s := range sinks {
			if strings.Contains(string(b), s) {
				t.Errorf("%s uses %s", path, s)
			}
		}
		if m := inline.Find(b); m != nil && !strings.HasSuffix(path, ".js") {
			t.Errorf("%s has inline script: %s", path, m)
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("assets: %d files, %v", n, err)
	}
	js, _ := assets.ReadFile("assets/app.js")
	code := regexp.MustCompile(`(?m)^\s*//.*$|//[^"\n]*$`).ReplaceAllString(string(js), "")
	code = strings.Replace(code, "function link(href, text, cls) { return el(\"a\", {href, class: cls}, text); }", "", 1)
	// Every link: link() to an app route, or an href that is one, a
	// file URL (filesURL escapes its parts) or the login page.
	for _, c := range []struct{ all, safe string }{
		{`\blink\(`, `\blink\(("#/|here \+ enc\()`},
		{`\bhref\b`, `\bhref(: "#/|: filesURL\(| = "/console/login")`},
	} {
		all, safe := regexp.MustCompile(c.all).FindAllStringIndex(code, -1), regexp.MustCompile(c.safe).FindAllString(code, -1)
		if len(all) == 0 || len(all) != len(safe) {
			t.Errorf("app.js: %d uses of %s, %d known safe (%q)", len(all), c.all, len(safe), safe)
		}
	}
	if strings.Contains(code, "<script>") {
		t.Error("app.js writes a script tag")
	}
	// The file browser's own link prefix is a console route.
	if !strings.Contains(code, `const here = "#/files/" + enc(policy) + "/" + enc(point) + "?path=";`) {
		t.Error(`app.js: the file browser's links no longer start with "#/files/"`)
	}
}

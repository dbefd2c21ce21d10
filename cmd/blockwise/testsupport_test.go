package main

import (
	"os/exec"
	"path"
	"strings"
	"testing"
)

// TestNoTestSupportInProduction: the binary and the public client link
// none of the test-support packages (apitest, repotest, testcert,
// backendtest, s3test, any *test or test* package of the module); they
// are for tests only.
func TestNoTestSupportInProduction(t *testing.T) {
	const module = "github.com/blockwise/blockwise/"
	out, err := exec.Command("go", "list", "-deps", ".", module+"client/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 || !strings.Contains(string(out), module+"internal/repo\n") {
		t.Fatalf("go list -deps listed too little: %v", pkgs)
	}
	for _, p := range pkgs {
		base := path.Base(p)
		if strings.HasPrefix(p, module) && (strings.HasSuffix(base, "test") || strings.HasPrefix(base, "test")) {
			t.Errorf("production code imports the test-support package %s", p)
		}
	}
}

package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// apiGet GETs path from the host's API over its unix socket.
func apiGet(t *testing.T, dir, path string) (int, http.Header, []byte) {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "api.sock"))
	}}}
	resp, err := c.Get("http://host" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func filesURL(point string, q url.Values) string {
	return "/v1/points/" + point + "/files?" + q.Encode()
}

// File-level restore from an S3 repository (versitygw): the CLI's ls,
// dump and restore --include, and the host API's browse and download of
// a file, a folder as tar and as zip, with its errors.
func TestFileRestoreS3AndAPI(t *testing.T) {
	srv, d := startS3CLI(t)
	d.cmd.Process.Kill() // restarted with the repository to serve files from
	d.cmd.Wait()
	d = startServeIn(t, d.dir, "--points-repo", srv.URL("backups", "cli"))
	g := imagetest.BuildGuestDisk(t, t.TempDir(), 50)
	d.must(t, "disk", "create", "vm", "--size", "480M")
	putImage(t, g.Img, "nbd+unix:///vm?socket="+filepath.Join(d.dir, "nbd.sock"))
	code, _, body := apiGet(t, d.dir, "/v1/points")
	if code != http.StatusNotFound || !strings.Contains(string(body), wire.ProblemPointNotFound) {
		t.Errorf("GET /v1/points before the repository exists: %d %s", code, body)
	}
	d.must(t, "repo", "init")
	d.must(t, "backup", "vm")

	hosts, _ := os.ReadFile(filepath.Join(g.Tree, "etc/hosts"))
	if got := runCLI(t, d.command(nil, "dump", "latest", "/part1/etc/hosts")); got.code != 0 || got.stdout != string(hosts) {
		t.Fatalf("dump from S3: exit %d: %q %s", got.code, got.stdout, got.stderr)
	}
	to := t.TempDir()
	d.must(t, "restore", "latest", "--include", "/part1/home", "--include", "/part3/bwtest-root/etc", "--to", to)
	imagetest.CompareTree(t, filepath.Join(g.Tree, "home"), filepath.Join(to, "part1/home"), imagetest.CompareOptions{TimeStep: 1e9, Sparse: true})
	imagetest.CompareTree(t, filepath.Join(g.Tree, "etc"), filepath.Join(to, "part3/bwtest-root/etc"), imagetest.CompareOptions{TimeStep: 1e9, Sparse: true})

	var points []wire.Point
	code, _, body = apiGet(t, d.dir, "/v1/points")
	if json.Unmarshal(body, &points); code != 200 || len(points) != 1 || points[0].Disk != "vm" {
		t.Fatalf("GET /v1/points: %d %s", code, body)
	}
	id := points[0].ID
	var ents []wire.PointFile
	code, _, body = apiGet(t, d.dir, filesURL(id[:12], url.Values{"path": {"/"}}))
	if json.Unmarshal(body, &ents); code != 200 || len(ents) != 4 || ents[0].Type != "volume" || !strings.Contains(ents[3].Error, "swap") {
		t.Fatalf("GET files /: %d %s", code, body)
	}
	code, _, body = apiGet(t, d.dir, filesURL("latest", url.Values{"path": {"/part1/etc"}, "disk": {"vm"}}))
	if json.Unmarshal(body, &ents); code != 200 || len(ents) != 3 || ents[2].Name != "shadow" || ents[2].GID != 42 || ents[2].Mode != "-rw-r-----" {
		t.Fatalf("GET files /part1/etc: %d %s", code, body)
	}
	code, h, body := apiGet(t, d.dir, filesURL(id, url.Values{"path": {"/part1/bin/tool"}}))
	tool, _ := os.ReadFile(filepath.Join(g.Tree, "bin/tool"))
	if code != 200 || !bytes.Equal(body, tool) || !strings.Contains(h.Get("Content-Disposition"), "tool") {
		t.Fatalf("GET a file: %d, %d bytes, %v", code, len(body), h)
	}
	rng := httpGetRange(t, d.dir, filesURL(id, url.Values{"path": {"/part1/bin/tool"}}), "bytes=1000-1999")
	if !bytes.Equal(rng, tool[1000:2000]) {
		t.Errorf("a Range request: %d bytes, differ", len(rng))
	}
	code, _, body = apiGet(t, d.dir, filesURL(id, url.Values{"path": {"/part1/etc"}, "archive": {"tar"}}))
	if code != 200 {
		t.Fatalf("GET tar: %d %s", code, body)
	}
	checkTar(t, body, map[string][]byte{"etc/hosts": hosts})
	code, _, body = apiGet(t, d.dir, filesURL(id, url.Values{"path": {"/part2/EFI"}, "archive": {"zip"}}))
	if code != 200 {
		t.Fatalf("GET zip: %d %s", code, body)
	}
	efi, _ := os.ReadFile(filepath.Join(g.FATTree, "EFI/BOOT/BOOTX64.EFI"))
	checkZip(t, body, map[string][]byte{"EFI/BOOT/BOOTX64.EFI": efi})

	for _, c := range []struct {
		url  string
		code int
		typ  string
	}{
		{filesURL(id, url.Values{"path": {"/part1/../etc"}}), 400, wire.ProblemInvalidRequest},
		{filesURL(id, url.Values{"path": {"/part1/nope"}}), 404, wire.ProblemFileNotFound},
		{filesURL("0123456789ab", url.Values{"path": {"/"}}), 404, wire.ProblemPointNotFound},
		{filesURL(id, url.Values{"path": {"/part4/x"}}), 422, wire.ProblemFilesystem},
		{filesURL(id, url.Values{"path": {"/part1"}, "archive": {"rar"}}), 400, wire.ProblemInvalidRequest},
	} {
		code, _, body := apiGet(t, d.dir, c.url)
		var p wire.Problem
		json.Unmarshal(body, &p)
		if code != c.code || p.Type != c.typ {
			t.Errorf("GET %s: %d %s, want %d %s", c.url, code, body, c.code, c.typ)
		}
	}
}

func checkTar(t *testing.T, b []byte, want map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[h.Name]; ok {
			got, _ := io.ReadAll(tr)
			if !bytes.Equal(got, w) {
				t.Errorf("tar %s differs", h.Name)
			}
			delete(want, h.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("not in the tar: %v", want)
	}
}

func checkZip(t *testing.T, b []byte, want map[string][]byte) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		if w, ok := want[f.Name]; ok {
			r, _ := f.Open()
			got, _ := io.ReadAll(r)
			if !bytes.Equal(got, w) {
				t.Errorf("zip %s differs", f.Name)
			}
			delete(want, f.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("not in the zip: %v", want)
	}
}

// httpGetRange GETs a byte range and expects 206.
func httpGetRange(t *testing.T, dir, path, rng string) []byte {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "api.sock"))
	}}}
	req, _ := http.NewRequest(http.MethodGet, "http://host"+path, nil)
	req.Header.Set("Range", rng)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("GET %s with Range %s: %d %s", path, rng, resp.StatusCode, b)
	}
	return b
}

package nbd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testcert"
)

// certGate is an Authorize hook: only a TLS peer whose certificate's
// common name is "client" may open (or see) export "a". It records what
// it was asked.
type certGate struct {
	mu    sync.Mutex
	asked []string
}

func (g *certGate) authorize(ctx context.Context, peer *tls.ConnectionState, export string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	cn := ""
	if peer != nil && len(peer.PeerCertificates) > 0 {
		cn = peer.PeerCertificates[0].Subject.CommonName
	}
	g.asked = append(g.asked, cn+":"+export)
	if cn == "client" && export == "a" {
		return nil
	}
	return fmt.Errorf("%s may not open %q", cn, export)
}

func authServer(t *testing.T) (*testServer, *testcert.PKI, *certGate) {
	pki := testcert.New(t)
	gate := &certGate{}
	srv := pki.ServerTLS()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	ts := startServer(t, map[string]*memExport{"a": newMemExport(1 << 20), "b": newMemExport(1 << 20)},
		ServerOptions{TLSConfig: srv, RequireTLS: true, Authorize: gate.authorize})
	return ts, pki, gate
}

// TestAuthorizeHook: the hook decides which export a TLS peer may open;
// a peer without a client certificate never gets past the handshake.
func TestAuthorizeHook(t *testing.T) {
	checkGoroutines(t)
	ts, pki, gate := authServer(t)
	ctx := context.Background()
	uri := func(e string) string { return strings.Replace(ts.tcpURI(e), "nbd:", "nbds:", 1) }
	c := dial(t, uri("a"), &ClientOptions{TLSConfig: pki.ClientTLS()})
	must(t, c.WriteAt(ctx, []byte("ticket"), 0, true))
	if _, err := Dial(ctx, uri("b"), &ClientOptions{TLSConfig: pki.ClientTLS()}); err == nil {
		t.Fatal("export b opened although the hook refuses it")
	}
	noCert := &tls.Config{RootCAs: pki.Pool}
	if _, err := Dial(ctx, uri("a"), &ClientOptions{TLSConfig: noCert}); err == nil {
		t.Fatal("TLS without a client certificate opened export a")
	}
	if _, err := Dial(ctx, ts.unixURI("a"), nil); !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("plain connection: %v", err)
	}
	gate.mu.Lock()
	defer gate.mu.Unlock()
	if len(gate.asked) != 2 || gate.asked[0] != "client:a" || gate.asked[1] != "client:b" {
		t.Fatalf("hook asked %v, want client:a client:b", gate.asked)
	}
}

// TestAuthorizeRealClients: nbdinfo --list sees only the export the hook
// allows, and qemu-img cannot open the other one, with the certificate.
func TestAuthorizeRealClients(t *testing.T) {
	nbdinfo := need(t, "nbdinfo")
	qemuImg := need(t, "qemu-img")
	ts, pki, _ := authServer(t)
	var list struct {
		Exports []struct {
			Name string `json:"export-name"`
		} `json:"exports"`
	}
	out := runCmd(t, nbdinfo, "--json", "--list", "nbds://"+ts.tcp+"/?tls-certificates="+pki.Dir)
	must(t, json.Unmarshal([]byte(out), &list))
	if len(list.Exports) != 1 || list.Exports[0].Name != "a" {
		t.Fatalf("nbdinfo --list shows %s, want only a", out)
	}
	host, port, _ := strings.Cut(ts.tcp, ":")
	obj := "tls-creds-x509,id=tls0,dir=" + pki.Dir + ",endpoint=client"
	opts := func(export string) string {
		return fmt.Sprintf("driver=nbd,host=%s,port=%s,export=%s,tls-creds=tls0", host, port, export)
	}
	runCmd(t, qemuImg, "info", "--object", obj, "--image-opts", opts("a"))
	if b, err := runCmdErr(qemuImg, "info", "--object", obj, "--image-opts", opts("b")); err == nil {
		t.Fatalf("qemu-img opened export b:\n%s", b)
	}
}

// runCmdErr runs a command expected to fail.
func runCmdErr(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

// testHost is a real host: API on a unix socket, NBD on a unix socket
// and on two TCP addresses, as `blockwise serve --nbd-tcp A --nbd-tcp B`
// runs it: TLS with a ticket (a client certificate from the datastore's
// CA, which also signs the server's), or, insecure, as with
// --nbd-tcp-insecure-no-auth and --tls-cert: anyone, TLS optional.
type testHost struct {
	dir, sockDir string
	h            *host.Host
	nbd          []*nbd.Server // [0] unix, [1], [2] TCP paths
	tcp          []string
	tcpOpts      nbd.ServerOptions
	tickets      *api.Tickets
	env          Env
}

// startHost starts a host with the secure default: TCP needs tickets.
func startHost(t *testing.T) *testHost { return startHostWith(t, false) }

func startHostWith(t *testing.T, insecure bool) *testHost {
	t.Helper()
	th := &testHost{dir: t.TempDir()}
	ds, err := disk.OpenDatastore(th.dir)
	if err != nil {
		t.Fatal(err)
	}
	th.h = host.New(ds)
	// Short socket paths: t.TempDir names can pass the 108-byte limit.
	if th.sockDir, err = os.MkdirTemp("", "bwtr"); err != nil {
		t.Fatal(err)
	}
	exports := api.ExportConfig{UnixSocket: filepath.Join(th.sockDir, "nbd.sock"), TLS: true, Insecure: insecure}
	var tcp []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tcp = append(tcp, l)
		exports.TCP = append(exports.TCP, l.Addr().String())
	}
	th.tickets = api.NewHostTickets(th.h, nil, exports)
	ca, err := th.tickets.CA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCert(nil)
	if err != nil {
		t.Fatal(err)
	}
	th.tcpOpts = nbd.ServerOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	if !insecure {
		cfg, err := th.tickets.ServerTLS(cert)
		if err != nil {
			t.Fatal(err)
		}
		th.tcpOpts = nbd.ServerOptions{TLSConfig: cfg, RequireTLS: true, Authorize: th.tickets.Authorize}
	}
	ul, err := net.Listen("unix", exports.UnixSocket)
	if err != nil {
		t.Fatal(err)
	}
	th.serveNBD(ul)
	for _, l := range tcp {
		th.serveNBD(l)
	}
	srv := api.New(th.h, api.Options{Exports: exports, Tickets: th.tickets})
	apiSock := filepath.Join(th.sockDir, "api.sock")
	l, err := net.Listen("unix", apiSock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		for _, s := range th.nbd {
			s.Shutdown(ctx)
		}
		th.h.Close()
		os.RemoveAll(th.sockDir)
	})
	c, err := client.New("unix://"+apiSock, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	th.env = Env{Client: c, HostURL: "unix://" + apiSock, Datastore: th.dir, Conns: 2}
	return th
}

// serveNBD starts one NBD server per path so a test can kill a path.
func (th *testHost) serveNBD(l net.Listener) {
	opts := nbd.ServerOptions{} // the unix socket: its mode is its protection
	if l.Addr().Network() == "tcp" {
		opts = th.tcpOpts
		th.tcp = append(th.tcp, l.Addr().String())
	}
	s := nbd.NewServer(th.h, opts)
	th.nbd = append(th.nbd, s)
	go s.Serve(l)
}

// testCerts makes a CA and a server certificate for 127.0.0.1.
func testCerts(t *testing.T) (*x509.CertPool, *tls.Config) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return pool, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
}

// makeDisk creates a disk with scattered random data and returns it.
func (th *testHost) makeDisk(t *testing.T, name string, size int64) *disk.Disk {
	t.Helper()
	d, err := th.h.Create(name, size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, d, size, 40)
	return d
}

func writeRandom(t *testing.T, d *disk.Disk, size int64, n int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for i := 0; i < n; i++ {
		rand.Read(buf)
		off := mrand(size/4096-16) * 4096
		if _, err := d.WriteAt(buf[:4096*(1+mrand(15))], off); err != nil {
			t.Fatal(err)
		}
	}
}

func mrand(n int64) int64 {
	v, _ := rand.Int(rand.Reader, big.NewInt(n))
	return v.Int64()
}

func diskOptions() disk.Options { return disk.Options{} }

package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/blockwise/blockwise/internal/testcert"
)

// testHost is a real host: API on a unix socket, NBD on a unix socket
// and on two TCP addresses (STARTTLS offered), as `blockwise serve
// --nbd-tcp A --nbd-tcp B` runs it.
type testHost struct {
	dir, sockDir string
	h            *host.Host
	nbd          []*nbd.Server // [0] unix, [1], [2] TCP paths
	tcp          []string
	tlsSrv       *tls.Config
	ca           *x509.CertPool
	env          Env
}

func startHost(t *testing.T) *testHost {
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
	pki := testcert.New(t)
	th.ca, th.tlsSrv = pki.Pool, &tls.Config{Certificates: []tls.Certificate{pki.Server}, MinVersion: tls.VersionTLS13}
	nbdSock := filepath.Join(th.sockDir, "nbd.sock")
	th.serveNBD(t, "unix", nbdSock)
	th.serveNBD(t, "tcp", "127.0.0.1:0")
	th.serveNBD(t, "tcp", "127.0.0.1:0")
	srv := api.New(th.h, api.Options{Exports: api.ExportConfig{UnixSocket: nbdSock, TCP: th.tcp, TLS: true}})
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
	th.env = Env{Client: c, HostURL: "unix://" + apiSock, Datastore: th.dir,
		TLS: &tls.Config{RootCAs: th.ca, MinVersion: tls.VersionTLS13}, Conns: 2}
	return th
}

// serveNBD starts one NBD server per path so a test can kill a path.
func (th *testHost) serveNBD(t *testing.T, network, addr string) *nbd.Server {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := nbd.NewServer(th.h, nbd.ServerOptions{TLSConfig: th.tlsSrv})
	go s.Serve(l)
	if network == "tcp" {
		if len(th.tcp) < 2 {
			th.tcp = append(th.tcp, l.Addr().String())
			th.nbd = append(th.nbd, s)
		}
	} else {
		th.nbd = append(th.nbd, s)
	}
	return s
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

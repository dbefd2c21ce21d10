package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// PKI is a CA with one server and one client certificate.
type PKI struct {
	Dir string // the PEM files, in QEMU's layout

	// Paths of the PEM files in Dir.
	CACert, ServerCert, ServerKey, ClientCert, ClientKey string

	CA     *x509.Certificate
	Pool   *x509.CertPool // trusts CA only
	Server tls.Certificate
	Client tls.Certificate
}

var serial atomic.Int64

// New makes a fresh CA and its two certificates, valid for an hour
// either side of now, and writes them into a t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), Pool: x509.NewCertPool()}
	caKey, caDER := makeCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "blockwise test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	var err error
	if p.CA, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	p.Pool.AddCert(p.CA)
	p.Server = p.leaf(t, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.Client = p.leaf(t, caKey, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "client"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.CACert = p.writePEM(t, "ca-cert.pem", "CERTIFICATE", caDER)
	p.ServerCert = p.writePEM(t, "server-cert.pem", "CERTIFICATE", p.Server.Certificate[0])
	p.ServerKey = p.writePEM(t, "server-key.pem", "PRIVATE KEY", marshalKey(t, p.Server.PrivateKey))
	p.ClientCert = p.writePEM(t, "client-cert.pem", "CERTIFICATE", p.Client.Certificate[0])
	p.ClientKey = p.writePEM(t, "client-key.pem", "PRIVATE KEY", marshalKey(t, p.Client.PrivateKey))
	return p
}

// ServerTLS serves the server certificate and verifies a client
// certificate when one is given.
func (p *PKI) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Server}, ClientCAs: p.Pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13}
}

// ClientTLS trusts the CA and offers the client certificate.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.Pool, Certificates: []tls.Certificate{p.Client}, MinVersion: tls.VersionTLS13}
}

// leaf makes a certificate signed by the CA.
func (p *PKI) leaf(t testing.TB, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, der := makeCert(t, caKey, p.CA, tmpl)
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// makeCert signs tmpl with parentKey as parent, or self-signs it when
// parent is nil.
func makeCert(t testing.TB, parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func marshalKey(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (p *PKI) writePEM(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

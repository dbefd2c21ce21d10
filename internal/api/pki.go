package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// PKIDir is the directory of the host's certificate authority in a
// datastore: ca-key.pem (0600) and ca-cert.pem, in a 0700 directory.
const PKIDir = "pki"

// caLifetime: the CA outlives any certificate it signs; a host serving
// for ten years replaces it by deleting the directory (tickets are in
// memory, so nothing outstanding breaks but what clients pinned).
const caLifetime = 10 * 365 * 24 * time.Hour

// serverCertLifetime: the host issues a fresh server certificate at
// every start, so this only bounds a host that runs for a year.
const serverCertLifetime = 365 * 24 * time.Hour

// CA is the host's own certificate authority. It signs the NBD server's
// certificate (unless the operator brings one) and the client
// certificates of tickets; the NBD server trusts no other client CA.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// LoadCA opens the CA of datastore directory dsDir, creating it on first
// use. A half-written pair (a crash between the two files) is replaced.
func LoadCA(dsDir string) (*CA, error) {
	dir := filepath.Join(dsDir, PKIDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	ca, err := readCA(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return ca, err
	}
	return createCA(dir)
}

func readCA(dir string) (*CA, error) {
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki %s: CA key is not ECDSA", dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki %s: %w", dir, err)
	}
	return &CA{cert: cert, key: key, pem: certPEM}, nil
}

// createCA writes the key before the certificate, each durably (temp,
// fsync, rename, fsync dir; files 0600).
func createCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(), Subject: pkix.Name{CommonName: "blockwise host CA " + host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(caLifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := fsutil.WriteAtomic(filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := fsutil.WriteAtomic(filepath.Join(dir, "ca-cert.pem"), certPEM); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, pem: certPEM}, nil
}

// CertPEM is the CA certificate, for clients to verify the host.
func (ca *CA) CertPEM() []byte { return ca.pem }

// Pool holds the CA certificate alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServerCert issues an NBD server certificate naming 127.0.0.1, ::1,
// localhost, this machine's host name and the given listen hosts.
func (ca *CA) ServerCert(hosts []string) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: "blockwise NBD"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	certPEM, keyPEM, err := ca.issue(tmpl, time.Now().Add(serverCertLifetime))
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// issue signs a fresh key into tmpl (serial, validity filled in when
// unset) and returns certificate and PKCS#8 key as PEM.
func (ca *CA) issue(tmpl *x509.Certificate, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = randSerial()
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-5*time.Minute), notAfter // clients' clocks drift
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// randSerial is a 128-bit random serial number (RFC 5280 allows 20 bytes).
func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n.Add(n, big.NewInt(1))
}

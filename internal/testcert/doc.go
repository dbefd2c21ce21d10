// Package testcert makes throwaway X.509 material for tests: a CA, a
// server certificate for 127.0.0.1 and localhost signed by it, and a
// client certificate, as TLS configurations and as PEM files in the
// layout QEMU's tls-creds-x509 reads (ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem). Test support only:
// production code never imports it.
package testcert

package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// Options configure a Client.
type Options struct {
	Token string // bearer token, required over https
	// CAFile is a PEM bundle trusted for the host's certificate (default:
	// the system roots).
	CAFile     string
	TLSConfig  *tls.Config  // overrides CAFile when set
	HTTPClient *http.Client // overrides everything above but Token
}

// Client talks to one host. It is safe for concurrent use.
type Client struct {
	base  string // scheme://host, no trailing slash
	token string
	hc    *http.Client
}

// New returns a client of the host at hostURL: unix:///path/api.sock or
// https://host:port (http:// is accepted for tests behind a proxy).
func New(hostURL string, o Options) (*Client, error) {
	u, err := url.Parse(hostURL)
	if err != nil {
		return nil, fmt.Errorf("client: host %q: %w", hostURL, err)
	}
	c := &Client{token: o.Token, hc: o.HTTPClient}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return nil, fmt.Errorf("client: host %q: unix URL needs a socket path", hostURL)
		}
		c.base = "http://blockwise"
		if c.hc == nil {
			c.hc = &http.Client{Transport: unixTransport(u.Path)}
		}
	case "https", "http":
		c.base = u.Scheme + "://" + u.Host
		if c.hc == nil {
			tc, err := tlsConfig(o)
			if err != nil {
				return nil, err
			}
			c.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
		}
	default:
		return nil, fmt.Errorf("client: host %q: want unix:///path or https://host:port", hostURL)
	}
	return c, nil
}

func unixTransport(path string) *http.Transport {
	var d net.Dialer
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	}}
}

func tlsConfig(o Options) (*tls.Config, error) {
	if o.TLSConfig != nil {
		return o.TLSConfig, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA %s: no PEM certificates", o.CAFile)
		}
	}
	return tc, nil
}

// call is do for a method that answers one document of type T: the
// document (zero-valued when the call failed) and the error.
func call[T any](ctx context.Context, c *Client, method, path string, in any) (*T, error) {
	var out T
	return &out, c.do(ctx, method, path, in, &out)
}

// callList is call for a GET that answers a list of T.
func callList[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var out []T
	return out, c.do(ctx, "GET", path, nil, &out)
}

// taskOf is the task an action answered, nil when it answered none.
func taskOf(t *Task, err error) (*Task, error) {
	if t.ID == "" {
		return nil, err
	}
	return t, err
}

// do sends a request with an optional JSON body and decodes a JSON
// answer into out (nil discards it).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeProblem(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

func decodeProblem(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var p wire.Problem
	if mt == wire.ProblemContentType && json.Unmarshal(data, &p) == nil && p.Type != "" {
		if p.Status == 0 {
			p.Status = resp.StatusCode
		}
		return &Error{p}
	}
	return fromStatus(resp.StatusCode, strings.TrimSpace(string(data)))
}

func esc(s string) string { return url.PathEscape(s) }

// pollSlice is how long one long-poll of WaitTask lasts; short enough to
// notice a dropped connection, long enough to cost nothing.
const pollSlice = 30 * time.Second

// ErrTaskFailed is returned by WaitTask when the task ended in failure.
var ErrTaskFailed = errors.New("task failed")

// TicketTLS is the TLS configuration an NBD client presents with ticket
// t: its client certificate, and t's CA as the roots that vouch for the
// host (roots, when not nil, replaces them: a host serving an operator's
// certificate).
func TicketTLS(t *Ticket, roots *x509.CertPool) (*tls.Config, error) {
	cert, err := tls.X509KeyPair([]byte(t.ClientCert), []byte(t.ClientKey))
	if err != nil {
		return nil, fmt.Errorf("ticket %s: %w", t.ID, err)
	}
	if roots == nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(t.CACert)) {
			return nil, fmt.Errorf("ticket %s: no CA certificate", t.ID)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS13}, nil
}

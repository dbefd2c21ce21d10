package api

import (
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	wire "github.com/blockwise/blockwise/api"
)

// ExportConfig describes where the host's NBD server listens, so the API
// can hand out URIs instead of clients building them.
type ExportConfig struct {
	UnixSocket  string   // "" when NBD does not listen on a unix socket
	TCP         []string // listener addresses, host:port
	TLS         bool     // STARTTLS offered
	TLSRequired bool     // plain NBD refused on the unix socket
	// Insecure: TCP serves plain NBD to anyone (--nbd-tcp-insecure-no-auth).
	// Otherwise TCP is TLS with a ticket only, and no nbd:// URI is given.
	Insecure bool
}

// TLSURIs lists the nbds:// URIs of export name, one per TCP listener:
// those a ticket opens.
func (c ExportConfig) TLSURIs(name string) []string {
	var out []string
	for _, a := range c.TCP {
		out = append(out, "nbds://"+advertised(a)+"/"+url.PathEscape(name))
	}
	return out
}

// URIs lists the NBD URIs of export name, preferred first: the unix
// socket (local clients), then TCP with TLS (which needs a ticket unless
// Insecure), then plain TCP (Insecure only).
func (c ExportConfig) URIs(name string) []string {
	path := "/" + url.PathEscape(name)
	var out []string
	if c.UnixSocket != "" {
		scheme := "nbd+unix"
		if c.TLSRequired {
			scheme = "nbds+unix"
		}
		out = append(out, scheme+"://"+path+"?socket="+escapeSocket(c.UnixSocket))
	}
	for _, a := range c.TCP {
		hp := advertised(a)
		if c.TLS {
			out = append(out, "nbds://"+hp+path)
		}
		if c.Insecure && !c.TLSRequired {
			out = append(out, "nbd://"+hp+path)
		}
	}
	return out
}

// escapeSocket escapes a socket path for the query while keeping its
// slashes readable (qemu and libnbd accept both).
func escapeSocket(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.QueryEscape(s)
	}
	return strings.Join(parts, "/")
}

// advertised replaces a wildcard listen address with the host name, which
// a remote client can resolve.
func advertised(addr string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		if hn, err := os.Hostname(); err == nil {
			h = hn
		}
	}
	return net.JoinHostPort(h, port)
}

func (s *Server) diskExports(r *http.Request) (int, any, error) {
	_, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, wire.Exports{Export: name, URIs: s.exports.URIs(name)}, nil
}

func (s *Server) snapshotExports(r *http.Request) (int, any, error) {
	_, si, err := s.findSnapshot(r)
	if err != nil {
		return 0, nil, err
	}
	name := r.PathValue("disk") + "@" + si.ID
	return http.StatusOK, wire.Exports{Export: name, URIs: s.exports.URIs(name)}, nil
}

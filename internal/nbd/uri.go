package nbd

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the IANA port of NBD.
const DefaultPort = "10809"

// URI is a parsed NBD URI.
type URI struct {
	Network string // "tcp" or "unix"
	Address string // host:port for tcp, socket path for unix
	Host    string // host name for TLS verification ("" for unix)
	Export  string
	TLS     bool
}

// ParseURI parses the NBD URI forms of the NBD project's uri.md:
//
//	nbd://host[:port]/export        plain TCP (port 10809 by default)
//	nbds://host[:port]/export       TCP with STARTTLS
//	nbd+unix:///export?socket=PATH  unix socket
//	nbds+unix:///export?socket=PATH unix socket with STARTTLS
//
// The export name is the path without its leading slash, percent-decoded;
// an empty path names the default export. IPv6 hosts go in brackets.
func ParseURI(s string) (*URI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("nbd: bad URI %q: %w", s, err)
	}
	out := &URI{Export: strings.TrimPrefix(u.Path, "/")}
	switch u.Scheme {
	case "nbd", "nbds":
		out.Network, out.TLS = "tcp", u.Scheme == "nbds"
		if u.Hostname() == "" {
			return nil, fmt.Errorf("nbd: URI %q has no host", s)
		}
		port := u.Port()
		if port == "" {
			port = DefaultPort
		}
		out.Host, out.Address = u.Hostname(), net.JoinHostPort(u.Hostname(), port)
	case "nbd+unix", "nbds+unix":
		out.Network, out.TLS = "unix", u.Scheme == "nbds+unix"
		out.Address = u.Query().Get("socket")
		if out.Address == "" || u.Host != "" {
			return nil, fmt.Errorf("nbd: URI %q: unix form needs ?socket= and no host", s)
		}
	default:
		return nil, fmt.Errorf("nbd: URI %q: unsupported scheme %q", s, u.Scheme)
	}
	return out, nil
}

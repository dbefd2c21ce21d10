package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/blockwise/blockwise/internal/nbd"
)

// ErrTLSVerify: the host's certificate did not verify against the CA.
// It ends the selection instead of skipping to plain nbd.
var ErrTLSVerify = errors.New("transport: host certificate not trusted")

// pool spreads requests over several connections to one multi-conn export.
type pool struct {
	mode string
	cs   []*nbd.Client
	next atomic.Uint64
}

var (
	_ Source = (*pool)(nil)
	_ Target = (*pool)(nil)
)

// Mode names the transport mode that opened the pool (nbd, nbdssl).
func (p *pool) Mode() string { return p.mode }

// Size is the export's size (every connection sees the same).
func (p *pool) Size() int64 { return p.cs[0].Size() }

// c picks the next connection, round-robin.
func (p *pool) c() *nbd.Client {
	return p.cs[p.next.Add(1)%uint64(len(p.cs))]
}

// ReadAt reads through the next connection.
func (p *pool) ReadAt(ctx context.Context, b []byte, off int64) error {
	return p.c().ReadAt(ctx, b, off)
}

// WriteAt writes through the next connection; Flush makes it durable.
func (p *pool) WriteAt(ctx context.Context, b []byte, off int64) error {
	return p.c().WriteAt(ctx, b, off, false)
}

// Zero zeroes a range through the next connection.
func (p *pool) Zero(ctx context.Context, off, n int64) error { return zero(ctx, p.c(), off, n) }

// Flush on every connection: only with multi-conn does one flush cover
// the others' writes, and a pool of one is the common fallback.
func (p *pool) Flush(ctx context.Context) error {
	for _, c := range p.cs {
		if err := c.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close closes every connection.
func (p *pool) Close() error {
	for _, c := range p.cs {
		c.Close()
	}
	return nil
}

// multi is an export opened on several addresses of the host.
type multi struct {
	*nbd.Multipath
	mode string
}

var (
	_ Source = (*multi)(nil)
	_ Target = (*multi)(nil)
)

// Mode names the transport mode that opened the paths.
func (m multi) Mode() string { return m.mode }

// WriteAt writes over the current path, without FUA (Flush follows).
func (m multi) WriteAt(ctx context.Context, b []byte, off int64) error {
	return m.Multipath.WriteAt(ctx, b, off, false)
}

// Zero zeroes a range over the current path.
func (m multi) Zero(ctx context.Context, off, n int64) error { return zero(ctx, m.Multipath, off, n) }

type zeroer interface {
	Zero(ctx context.Context, off, length int64, punch, fast bool) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
}

func zero(ctx context.Context, c zeroer, off, n int64) error {
	err := c.Zero(ctx, off, n, true, false)
	if errors.Is(err, nbd.ErrNotSupported) {
		return c.WriteAt(ctx, make([]byte, n), off, false)
	}
	return err
}

func openNBD(ctx context.Context, env Env, diskName, snap string) (Source, string, error) {
	return openNetwork(ctx, env, diskName, snap, ModeNBD)
}

func openNBDSSL(ctx context.Context, env Env, diskName, snap string) (Source, string, error) {
	return openNetwork(ctx, env, diskName, snap, ModeNBDSSL)
}

func openNetwork(ctx context.Context, env Env, diskName, snap, mode string) (Source, string, error) {
	ex, err := env.Client.Exports(ctx, diskName, snap)
	if err != nil {
		return nil, "", fmt.Errorf("exports of %s@%s: %w", diskName, snap, err)
	}
	src, detail, err := dialTCP(ctx, env, ex.URIs, mode, diskName, snap)
	if err != nil {
		return nil, "", err // not a typed nil in the interface
	}
	return src, detail, nil
}

// dialTCP opens the TCP URIs of mode's scheme: multipath over several
// addresses, else a pool when the export allows multi-conn. nbdssl
// presents a ticket for diskName@snap, revoked when the source closes.
func dialTCP(ctx context.Context, env Env, all []string, mode, diskName, snap string) (*netSource, string, error) {
	scheme := map[string]string{ModeNBD: "nbd://", ModeNBDSSL: "nbds://"}[mode]
	var uris []string
	for _, u := range all {
		if strings.HasPrefix(u, scheme) {
			uris = append(uris, u)
		}
	}
	if len(uris) == 0 {
		return nil, "", skip("the host offers no %s URI", strings.TrimSuffix(scheme, "://"))
	}
	opts := &nbd.ClientOptions{}
	release := func() {}
	if mode == ModeNBDSSL {
		tc, rel, err := TicketTLS(ctx, env, diskName, snap)
		if err != nil {
			return nil, "", skip("%w", err)
		}
		opts.TLSConfig, release = tc, rel
	}
	var src *netSource
	var detail string
	var err error
	if len(uris) > 1 {
		src, detail, err = dialMulti(ctx, env, uris, opts, mode)
	} else {
		src, detail, err = dialPool(ctx, env, uris[0], opts, mode)
	}
	if err != nil {
		release()
		return nil, "", err
	}
	src.release = release
	return src, detail, nil
}

func dialMulti(ctx context.Context, env Env, uris []string, opts *nbd.ClientOptions, mode string) (*netSource, string, error) {
	policy := env.Policy
	if policy == "" {
		policy = nbd.PolicyRoundRobin
	}
	m, err := nbd.DialMultipath(ctx, uris, nbd.MultipathOptions{Policy: policy, SwitchEvery: env.SwitchEvery, Client: opts})
	if err != nil {
		return nil, "", dialErr(err)
	}
	detail := fmt.Sprintf("%d paths, %s: %s", len(uris), policy, strings.Join(uris, " "))
	return &netSource{multi: &multi{Multipath: m, mode: mode}}, detail, nil
}

func dialPool(ctx context.Context, env Env, uri string, opts *nbd.ClientOptions, mode string) (*netSource, string, error) {
	c, err := nbd.Dial(ctx, uri, opts)
	if err != nil {
		return nil, "", dialErr(err)
	}
	p := &pool{mode: mode, cs: []*nbd.Client{c}}
	n := env.Conns
	if n <= 0 {
		n = 4
	}
	for c.Flags()&nbd.FlagCanMultiConn != 0 && len(p.cs) < n {
		more, err := nbd.Dial(ctx, uri, opts)
		if err != nil {
			break // fewer connections still work
		}
		p.cs = append(p.cs, more)
	}
	return &netSource{pool: p}, fmt.Sprintf("%s, %d connections", uri, len(p.cs)), nil
}

// dialErr: a certificate the CA does not vouch for fails closed; anything
// else (nothing listening, refused) lets the next mode try.
func dialErr(err error) error {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return fmt.Errorf("%w: %w", ErrTLSVerify, err)
	}
	return skip("%w", err)
}

// netSource is a pool or a multipath export; one of them is set.
// release, if set, revokes its ticket after Close.
type netSource struct {
	pool    *pool
	multi   *multi
	release func()
}

var (
	_ Source = (*netSource)(nil)
	_ Target = (*netSource)(nil)
)

// io is whichever of pool and multi is set.
func (s *netSource) io() interface {
	Mode() string
	Size() int64
	ReadAt(context.Context, []byte, int64) error
	WriteAt(context.Context, []byte, int64) error
	Zero(context.Context, int64, int64) error
	Flush(context.Context) error
	Close() error
} {
	if s.multi != nil {
		return s.multi
	}
	return s.pool
}

// Mode names the transport mode in use.
func (s *netSource) Mode() string { return s.io().Mode() }

// Size is the export's size.
func (s *netSource) Size() int64 { return s.io().Size() }

// Close closes the connections, then revokes the ticket if there is one.
func (s *netSource) Close() error {
	err := s.io().Close()
	if s.release != nil {
		s.release()
		s.release = nil
	}
	return err
}

// ReadAt reads the snapshot's (or the disk's) bytes.
func (s *netSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	return s.io().ReadAt(ctx, p, off)
}

// WriteAt writes a restored run; durable after Flush.
func (s *netSource) WriteAt(ctx context.Context, p []byte, off int64) error {
	return s.io().WriteAt(ctx, p, off)
}

// Zero makes a range of the target read as zeroes.
func (s *netSource) Zero(ctx context.Context, off, n int64) error { return s.io().Zero(ctx, off, n) }

// Flush makes every write so far durable on the host.
func (s *netSource) Flush(ctx context.Context) error { return s.io().Flush(ctx) }

// Paths reports the multipath state, nil for a single address.
func (s *netSource) Paths() []nbd.PathStats {
	if s.multi == nil {
		return nil
	}
	return s.multi.Paths()
}

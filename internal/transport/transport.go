package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backup"
)

// DefaultOrder is VDDK's default transport order.
const DefaultOrder = "san:hotadd:nbdssl:nbd"

// Mode names.
const (
	ModeSAN    = "san"
	ModeHotAdd = "hotadd"
	ModeNBDSSL = "nbdssl"
	ModeNBD    = "nbd"
)

// Errors.
var (
	// ErrUnknownMode: the order names a mode that does not exist.
	ErrUnknownMode = errors.New("transport: unknown mode")
	// ErrNoMode: every mode of the order was skipped.
	ErrNoMode = errors.New("transport: no usable transport mode")
	// ErrSkip marks a failed precondition: the next mode is tried.
	ErrSkip = errors.New("precondition not met")
	// ErrSANRestore: san cannot write (see OpenTarget).
	ErrSANRestore = errors.New("san restore writes layer files and needs the disk detached from the host; not implemented, use hotadd or nbd")
)

// Source is the data of one snapshot, whatever the transport.
type Source interface {
	backup.Source
	Mode() string
	Size() int64
}

// Env is what the modes need to know about the proxy and the host.
type Env struct {
	Client *client.Client
	// HostURL is how Client reaches the host; hotadd needs unix://.
	HostURL string
	// Datastore is the proxy's mount of the host's datastore ("" : san
	// is not configured).
	Datastore string
	// TLS verifies the host for nbdssl (RootCAs from the user's CA);
	// nil trusts the CA of the ticket nbdssl gets from the host (the
	// host's own) and the system roots.
	TLS *tls.Config
	// Conns is the connections per export with multi-conn (default 4).
	Conns int
	// Policy and SwitchEvery configure multipath when the host offers
	// several TCP addresses (default round-robin, 1000).
	Policy      string
	SwitchEvery int
}

// Skip is a mode passed over, and why.
type Skip struct {
	Mode, Reason string
}

// Report says which mode was used and why earlier ones were skipped.
type Report struct {
	Mode    string
	Detail  string // e.g. the URIs or directory used
	Skipped []Skip
}

// String implements fmt.Stringer.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "transport %s", r.Mode)
	if r.Detail != "" {
		fmt.Fprintf(&b, " (%s)", r.Detail)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "; skipped %s: %s", s.Mode, s.Reason)
	}
	return b.String()
}

// opener opens one mode; an error wrapping ErrSkip lets the next one try.
type opener func(ctx context.Context, env Env, disk, snap string) (Source, string, error)

var sources = map[string]opener{
	ModeSAN: openSAN, ModeHotAdd: openHotAdd, ModeNBDSSL: openNBDSSL, ModeNBD: openNBD,
}

// ParseOrder splits "san:hotadd:nbdssl:nbd" and checks the names.
func ParseOrder(order string) ([]string, error) {
	if order == "" {
		order = DefaultOrder
	}
	modes := strings.Split(order, ":")
	for _, m := range modes {
		if _, ok := sources[m]; !ok {
			return nil, fmt.Errorf("%w %q in %q (want some of %s)", ErrUnknownMode, m, order, DefaultOrder)
		}
	}
	return modes, nil
}

// Open opens snapshot snap of disk through the first mode of order whose
// preconditions hold.
func Open(ctx context.Context, order string, env Env, disk, snap string) (Source, Report, error) {
	var rep Report
	modes, err := ParseOrder(order)
	if err != nil {
		return nil, rep, err
	}
	for _, m := range modes {
		src, detail, err := sources[m](ctx, env, disk, snap)
		if err == nil {
			rep.Mode, rep.Detail = m, detail
			return src, rep, nil
		}
		if !errors.Is(err, ErrSkip) || ctx.Err() != nil {
			return nil, rep, fmt.Errorf("transport %s: %w", m, err)
		}
		rep.Skipped = append(rep.Skipped, Skip{Mode: m, Reason: strings.TrimSuffix(err.Error(), ": "+ErrSkip.Error())})
	}
	return nil, rep, fmt.Errorf("%w for %s@%s: %s", ErrNoMode, disk, snap, rep)
}

// Opener adapts Open to backup.Options.Open; report receives each Report.
func Opener(order string, env Env, report func(Report)) func(context.Context, string, string) (backup.Source, error) {
	return func(ctx context.Context, disk, snap string) (backup.Source, error) {
		src, rep, err := Open(ctx, order, env, disk, snap)
		if report != nil {
			report(rep)
		}
		if err != nil {
			return nil, err
		}
		return src, nil
	}
}

// skip wraps a precondition failure.
func skip(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrSkip)...)
}

// ErrNoLocalAPI: a service of the host needs the API's unix socket to
// reach the host as its own client, and the host listens on none.
var ErrNoLocalAPI = errors.New("needs the API's unix socket (--api-unix is none)")

// LocalEnv is the Env of a service that runs inside the host and reaches
// it as a client through the API's unix socket (0600, trusted by mode):
// the scheduler's backups and restores, the recovery service's copies.
// apiAddrs are the host's API listeners, datastore its directory.
func LocalEnv(apiAddrs []string, datastore string) (Env, error) {
	sock := ""
	for _, a := range apiAddrs {
		if strings.HasPrefix(a, "/") {
			sock = a
		}
	}
	if sock == "" {
		return Env{}, ErrNoLocalAPI
	}
	c, err := client.New("unix://"+sock, client.Options{})
	if err != nil {
		return Env{}, err
	}
	return Env{Client: c, HostURL: "unix://" + sock, Datastore: datastore, Conns: 4,
		Policy: "round-robin", SwitchEvery: 1000}, nil
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
)

// Target is a live disk written by a restore, whatever the transport.
type Target interface {
	backup.Target
	Mode() string
	Close() error
}

// OpenTarget opens the live disk diskName for a restore through the
// first mode of order whose preconditions hold. san is always skipped
// (ErrSANRestore): writing layer files behind the host's back is only
// sound with the disk detached from the host, which this does not do.
// hotadd writes through the host's own unix NBD socket.
func OpenTarget(ctx context.Context, order string, env Env, diskName string) (Target, Report, error) {
	var rep Report
	modes, err := ParseOrder(order)
	if err != nil {
		return nil, rep, err
	}
	for _, m := range modes {
		t, detail, err := openTargetMode(ctx, env, diskName, m)
		if err == nil {
			rep.Mode, rep.Detail = m, detail
			return t, rep, nil
		}
		if !errors.Is(err, ErrSkip) || ctx.Err() != nil {
			return nil, rep, fmt.Errorf("transport %s: %w", m, err)
		}
		rep.Skipped = append(rep.Skipped, Skip{Mode: m, Reason: strings.TrimSuffix(err.Error(), ": "+ErrSkip.Error())})
	}
	return nil, rep, fmt.Errorf("%w for restore to %s: %s", ErrNoMode, diskName, rep)
}

func openTargetMode(ctx context.Context, env Env, diskName, mode string) (Target, string, error) {
	if mode == ModeSAN {
		return nil, "", skip("%w", ErrSANRestore)
	}
	ex, err := env.Client.Exports(ctx, diskName, "")
	if err != nil {
		return nil, "", fmt.Errorf("exports of %s: %w", diskName, err)
	}
	if mode == ModeHotAdd {
		return openUnixTarget(ctx, env, ex.URIs)
	}
	t, detail, err := dialTCP(ctx, env, ex.URIs, mode, diskName, "")
	if err != nil {
		return nil, "", err
	}
	return t, detail, nil
}

func openUnixTarget(ctx context.Context, env Env, uris []string) (Target, string, error) {
	if !strings.HasPrefix(env.HostURL, "unix://") {
		return nil, "", skip("the host's API is not reached over its unix socket (%s), so it is not on this machine", orNone(env.HostURL))
	}
	for _, u := range uris {
		pu, err := nbd.ParseURI(u)
		if err != nil || pu.Network != "unix" {
			continue
		}
		if _, err := os.Stat(pu.Address); err != nil {
			return nil, "", skip("NBD socket not accessible here: %w", err)
		}
		c, err := nbd.Dial(ctx, u, nil)
		if err != nil {
			return nil, "", skip("%w", err)
		}
		return &netSource{pool: &pool{mode: ModeHotAdd, cs: []*nbd.Client{c}}}, u, nil
	}
	return nil, "", skip("the host offers no unix-socket NBD URI")
}

// DialURI opens an NBD export given by URI as a restore target, outside
// any mode selection (restore --to-uri).
func DialURI(ctx context.Context, uri string, opts *nbd.ClientOptions) (Target, error) {
	c, err := nbd.Dial(ctx, uri, opts)
	if err != nil {
		return nil, err
	}
	return &netSource{pool: &pool{mode: "uri", cs: []*nbd.Client{c}}}, nil
}

package transport

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
)

// hotAddSource reads through a private attachment and removes it on Close.
type hotAddSource struct {
	*nbd.Client
	cl         *client.Client
	disk, snap string
	id         string
}

var _ Source = (*hotAddSource)(nil)

// Mode is ModeHotAdd.
func (s *hotAddSource) Mode() string { return ModeHotAdd }

// Close closes the connection and detaches the private attachment.
func (s *hotAddSource) Close() error {
	s.Client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.cl.Detach(ctx, s.disk, s.snap, s.id)
}

func openHotAdd(ctx context.Context, env Env, diskName, snap string) (Source, string, error) {
	if !strings.HasPrefix(env.HostURL, "unix://") {
		return nil, "", skip("the host's API is not reached over its unix socket (%s), so it is not on this machine", orNone(env.HostURL))
	}
	a, err := env.Client.Attach(ctx, diskName, snap)
	if err != nil {
		return nil, "", skip("attach: %w", err)
	}
	detach := func() { env.Client.Detach(context.WithoutCancel(ctx), diskName, snap, a.ID) }
	if _, err := os.Stat(a.Socket); err != nil {
		detach()
		return nil, "", skip("attachment socket not accessible here: %w", err)
	}
	c, err := nbd.Dial(ctx, a.URI, nil)
	if err != nil {
		detach()
		return nil, "", skip("%w", err)
	}
	return &hotAddSource{Client: c, cl: env.Client, disk: diskName, snap: snap, id: a.ID}, a.Socket, nil
}

func orNone(s string) string {
	if s == "" {
		return "none given"
	}
	return s
}

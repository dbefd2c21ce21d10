package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/blockwise/blockwise/internal/host"
)

// DefaultSpaceCheck is how often the host measures its datastore's use
// against the soft threshold (Options.SpaceWarn).
const DefaultSpaceCheck = 10 * time.Second

// spaceWatch logs a warning when the datastore's use crosses the soft
// threshold, and again (at info) when it falls back below it. GET
// /v1/host and /metrics measure at each request; this is the log's part.
type spaceWatch struct {
	h     *host.Host
	log   *slog.Logger
	every time.Duration
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// Start implements Service.
func (w *spaceWatch) Start(ctx context.Context, _ *Daemon) error {
	ctx, w.stop = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.run(ctx)
	}()
	return nil
}

// Stop implements Service.
func (w *spaceWatch) Stop(context.Context) error {
	w.stop()
	w.wg.Wait()
	return nil
}

func (w *spaceWatch) run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	warned := false
	for {
		sp, err := w.h.Space()
		switch {
		case err != nil:
			w.log.Warn("datastore space", "err", err)
		case sp.Warning != "" && !warned:
			w.log.Warn("datastore space above threshold", "path", sp.Path, "used", sp.Used, "capacity", sp.Capacity,
				"free", sp.Free, "provisioned", sp.Provisioned, "overcommit", sp.Overcommit, "threshold", sp.Warn, "detail", sp.Warning)
			warned = true
		case sp.Warning == "" && warned:
			w.log.Info("datastore space back below threshold", "path", sp.Path, "used", sp.Used, "capacity", sp.Capacity, "threshold", sp.Warn)
			warned = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

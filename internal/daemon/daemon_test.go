package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// service records its lifetime against the daemon's.
type service struct {
	started, stopped chan struct{}
	sawHost          bool
}

func (s *service) Start(_ context.Context, d *Daemon) error {
	s.sawHost = d.Host() != nil
	close(s.started)
	return nil
}

func (s *service) Stop(context.Context) error { close(s.stopped); return nil }

// TestDaemon: a host in process on a temporary datastore answers the API
// on its unix socket and NBD on its own; a write acknowledged over NBD is
// on the disk after a graceful stop, which ends within the deadline and
// stops the registered service; the datastore's lock is then free again.
func TestDaemon(t *testing.T) {
	dir, err := os.MkdirTemp("", "bwdaemon") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := Options{Datastore: dir, ShutdownTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(opts); !errors.Is(err, disk.ErrBusy) {
		t.Fatalf("a second daemon on the datastore: %v", err)
	}
	svc := &service{started: make(chan struct{}), stopped: make(chan struct{})}
	d.Register(svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()

	c, err := client.New("unix://"+filepath.Join(dir, "api.sock"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	<-svc.started
	if !svc.sawHost {
		t.Fatal("the service saw no host")
	}
	if got := d.NBDAddrs(); len(got) != 1 || got[0] != filepath.Join(dir, "nbd.sock") {
		t.Fatalf("NBD addresses %v", got)
	}
	nc, err := nbd.Dial(ctx, "nbd+unix:///vm?socket="+filepath.Join(dir, "nbd.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("blockwise"), 4096/9+1)[:4096]
	if err := nc.WriteAt(ctx, data, 8192, false); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// nc stays open: the graceful stop closes it.
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(opts.ShutdownTimeout + 5*time.Second):
		t.Fatal("the daemon did not stop within its deadline")
	}
	if el := time.Since(start); el > opts.ShutdownTimeout {
		t.Fatalf("stop took %s", el)
	}
	<-svc.stopped
	nc.Close()

	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := ds.Open("vm")
	if err != nil {
		t.Fatalf("the datastore is still held after the stop: %v", err)
	}
	defer dk.Close()
	got := make([]byte, len(data))
	if _, err := dk.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the acknowledged write is not on the disk (%v)", err)
	}
}

// TestConfigErrors: invalid options are ErrConfig, before anything listens.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{
		{},
		{Datastore: dir, NBDInsecure: true},
		{Datastore: dir, NBDTLS: NBDTLS{TLSRequired: true}},
		{Datastore: dir, APITCP: "127.0.0.1:0"},
		{Datastore: dir, NBDTLS: NBDTLS{TLSCert: filepath.Join(dir, "none.pem"), TLSKey: filepath.Join(dir, "none.key")}},
	} {
		d, err := New(o)
		if !errors.Is(err, ErrConfig) {
			if d != nil {
				d.Close()
			}
			t.Errorf("%+v: %v, want ErrConfig", o, err)
		}
	}
	d, err := New(Options{Datastore: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("after refused configurations the datastore is not free: %v", err)
	}
	d.Close()
}

package host_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// TestLease: one holder at a time, naming the holder to the refused;
// renewals, release, expiry and takeover by ID.
func TestLease(t *testing.T) {
	e := newEnv(t)
	if _, err := e.Host.Create("vm", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Host.AcquireLease("nope", "x", time.Second, ""); !errors.Is(err, disk.ErrNotFound) {
		t.Fatalf("lease of a missing disk: %v", err)
	}
	a, err := e.Host.AcquireLease("vm", "backup A", 300*time.Millisecond, "")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{"second holder refused", func() error {
			_, err := e.Host.AcquireLease("vm", "backup B", time.Second, "")
			if err != nil && !strings.Contains(err.Error(), `"backup A" since`) {
				t.Errorf("refusal does not name the holder: %v", err)
			}
			return err
		}, host.ErrLeaseHeld},
		{"wrong replace refused", func() error { _, err := e.Host.AcquireLease("vm", "B", time.Second, "other"); return err }, host.ErrLeaseHeld},
		{"renew", func() error { _, err := e.Host.RenewLease("vm", a.ID, 300*time.Millisecond); return err }, nil},
		{"current", func() error {
			l, err := e.Host.CurrentLease("vm")
			if err == nil && l.Holder != "backup A" {
				t.Errorf("current lease %+v", l)
			}
			return err
		}, nil},
		{"renew a stranger's", func() error { _, err := e.Host.RenewLease("vm", "other", time.Second); return err }, host.ErrLeaseNotFound},
		{"expired: free", func() error {
			time.Sleep(400 * time.Millisecond)
			if _, err := e.Host.CurrentLease("vm"); !errors.Is(err, host.ErrLeaseNotFound) {
				t.Errorf("expired lease still current: %v", err)
			}
			b, err := e.Host.AcquireLease("vm", "backup B", time.Minute, "")
			if err == nil {
				a = b
			}
			return err
		}, nil},
		{"renew after losing it", func() error { _, err := e.Host.RenewLease("vm", "x", time.Second); return err }, host.ErrLeaseNotFound},
		{"take over by ID", func() error {
			c, err := e.Host.AcquireLease("vm", "backup C", time.Minute, a.ID)
			if err == nil {
				a = c
			}
			return err
		}, nil},
		{"release", func() error { return e.Host.ReleaseLease("vm", a.ID) }, nil},
		{"release twice", func() error { return e.Host.ReleaseLease("vm", a.ID) }, host.ErrLeaseNotFound},
		{"free again", func() error { _, err := e.Host.AcquireLease("vm", "D", time.Second, ""); return err }, nil},
	}
	for _, s := range steps {
		if err := s.do(); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
	}
}

// A disk's lease goes with the disk: a new disk of the same name is not
// leased to the old one's backup (and the host keeps no lease of a gone
// disk in memory).
func TestLeaseDiesWithDisk(t *testing.T) {
	e := newEnv(t)
	if _, err := e.Host.Create("vm", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Host.AcquireLease("vm", "backup of the old vm", time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.Host.Delete("vm"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Host.Create("vm", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	if l, err := e.Host.CurrentLease("vm"); !errors.Is(err, host.ErrLeaseNotFound) {
		t.Fatalf("new vm inherited the deleted vm's lease: %+v %v", l, err)
	}
	if _, err := e.Host.AcquireLease("vm", "backup of the new vm", time.Second, ""); err != nil {
		t.Fatal(err)
	}
}

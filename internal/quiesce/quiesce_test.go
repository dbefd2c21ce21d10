package quiesce

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFreezer records calls; the real agent is tested in cmd/blockwise's
// TestQEMUSource (and libvirt's in TestLibvirtSource).
type fakeFreezer struct {
	mu        sync.Mutex
	frozen    bool
	none      bool // nothing to freeze
	freezeErr error
	thaws     int
	closed    bool
}

func (f *fakeFreezer) Freeze(ctx context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.freezeErr != nil {
		return 0, f.freezeErr
	}
	if f.none {
		return 0, nil
	}
	f.frozen = true
	return 2, nil
}

func (f *fakeFreezer) Thaw(ctx context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thaws++
	f.frozen = false
	return 2, nil
}

func (f *fakeFreezer) Status(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		return "frozen", nil
	}
	return "thawed", nil
}

func (f *fakeFreezer) Close() error { f.closed = true; return nil }

func (f *fakeFreezer) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

func TestRun(t *testing.T) {
	errTake := errors.New("take failed")
	for _, tc := range []struct {
		name       string
		policy     Policy
		fr         *fakeFreezer // nil: no agent configured
		pre        string
		take       error
		sleep      time.Duration
		wantCons   string
		wantReason string
		wantErr    error
	}{
		{name: "frozen", policy: Try, fr: &fakeFreezer{}, wantCons: Application, wantReason: "2 file systems frozen"},
		{name: "off", policy: Off, fr: &fakeFreezer{}, wantCons: Crash, wantReason: "quiescing off"},
		{name: "no agent try", policy: Try, wantCons: Crash, wantReason: "no guest agent"},
		{name: "no agent require", policy: Require, wantCons: Crash, wantErr: ErrRequired},
		{name: "freeze fails try", policy: Try, fr: &fakeFreezer{freezeErr: errors.New("EBUSY")}, wantCons: Crash, wantReason: "freeze failed"},
		{name: "freeze fails require", policy: Require, fr: &fakeFreezer{freezeErr: errors.New("EBUSY")}, wantCons: Crash, wantErr: ErrRequired},
		{name: "pre-freeze fails try", policy: Try, fr: &fakeFreezer{}, pre: "exit 4", wantCons: Crash, wantReason: "pre-freeze hook failed"},
		{name: "pre-freeze fails require", policy: Require, fr: &fakeFreezer{}, pre: "exit 4", wantCons: Crash, wantErr: ErrRequired},
		{name: "take fails", policy: Try, fr: &fakeFreezer{}, take: errTake, wantErr: errTake},
		{name: "window exceeded", policy: Try, fr: &fakeFreezer{}, sleep: 300 * time.Millisecond, wantCons: Crash, wantReason: "freeze window"},
		{name: "window exceeded require", policy: Require, fr: &fakeFreezer{}, sleep: 300 * time.Millisecond, wantCons: Crash, wantErr: ErrRequired},
		{name: "nothing to freeze try", policy: Try, fr: &fakeFreezer{none: true}, wantCons: Crash, wantReason: "froze no file system"},
		{name: "nothing to freeze require", policy: Require, fr: &fakeFreezer{none: true}, wantCons: Crash, wantErr: ErrRequired},
		{name: "left frozen", policy: Try, fr: &fakeFreezer{frozen: true}, wantCons: Application, wantReason: "left by an earlier run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Policy: tc.policy, Timeout: 100 * time.Millisecond, PreFreeze: tc.pre}
			if tc.fr != nil {
				o.Connect = func(context.Context) (Freezer, error) { return tc.fr, nil }
			}
			if tc.sleep == 0 {
				o.Timeout = 5 * time.Second
			}
			took := false
			res, err := Run(context.Background(), o, func(context.Context) error {
				took = true
				time.Sleep(tc.sleep)
				return tc.take
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && !took {
				t.Fatal("the view was not taken")
			}
			if errors.Is(tc.wantErr, ErrRequired) && took && res.Consistency != Crash {
				t.Fatal("require took a view it could not freeze for")
			}
			if tc.wantCons != "" && res.Consistency != tc.wantCons {
				t.Fatalf("consistency %q (%s), want %q", res.Consistency, res.Reason, tc.wantCons)
			}
			if !strings.Contains(res.Reason, tc.wantReason) {
				t.Fatalf("reason %q, want %q", res.Reason, tc.wantReason)
			}
			if tc.fr != nil && tc.fr.isFrozen() {
				t.Fatal("left frozen")
			}
		})
	}
}

// TestCancelledContextThaws: a SIGTERM of the CLI cancels its context
// inside the window; the thaw still runs.
func TestCancelledContextThaws(t *testing.T) {
	fr := &fakeFreezer{}
	ctx, cancel := context.WithCancel(context.Background())
	o := Options{Policy: Try, Connect: func(context.Context) (Freezer, error) { return fr, nil }}
	_, err := Run(ctx, o, func(ctx context.Context) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || fr.isFrozen() || fr.thaws == 0 {
		t.Fatalf("err %v, frozen %v, thaws %d", err, fr.isFrozen(), fr.thaws)
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": Try, "off": Off, "try": Try, "require": Require} {
		if p, err := ParsePolicy(in); err != nil || p != want {
			t.Errorf("%q: %q %v", in, p, err)
		}
	}
	if _, err := ParsePolicy("sometimes"); !errors.Is(err, ErrPolicy) {
		t.Errorf("bad policy: %v", err)
	}
}

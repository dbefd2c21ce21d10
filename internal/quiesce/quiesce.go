package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/blockwise/blockwise/internal/qmp"
)

// Policy says what to do when the guest cannot be frozen.
type Policy string

// Policies.
const (
	Off     Policy = "off"
	Try     Policy = "try"
	Require Policy = "require"
)

// Consistency levels of a restore point.
const (
	Application = "application"
	Crash       = "crash"
)

// DefaultTimeout bounds the freeze window.
const DefaultTimeout = 10 * time.Second

// Sentinel errors.
var (
	// ErrRequired: the policy is require and the guest could not be
	// frozen (or thawed in time): no point is taken.
	ErrRequired = errors.New("quiesce required but not achieved")
	// ErrPolicy: an unknown policy name.
	ErrPolicy = errors.New("quiesce policy must be off, try or require")
	// ErrStillFrozen: the guest did not thaw; it says so loudly, as a
	// frozen guest stops its applications.
	ErrStillFrozen = errors.New("guest still frozen after thaw")
)

// ParsePolicy checks a policy name ("" is Try).
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return Try, nil
	case Off, Try, Require:
		return p, nil
	}
	return "", fmt.Errorf("%w: %q", ErrPolicy, s)
}

// Freezer freezes and thaws a guest's file systems.
type Freezer interface {
	Freeze(ctx context.Context) (int, error)
	Thaw(ctx context.Context) (int, error)
	// Status is "thawed" or "frozen".
	Status(ctx context.Context) (string, error)
	Close() error
}

// Options of Run.
type Options struct {
	Policy  Policy
	Timeout time.Duration // freeze window; DefaultTimeout if zero
	// PreFreeze and PostThaw are host commands (run by sh -c); empty for
	// none.
	PreFreeze, PostThaw string
	// Connect returns the guest's freezer; nil when none is configured.
	Connect func(ctx context.Context) (Freezer, error)
}

// Result says how consistent the view is and why.
type Result struct {
	Consistency string
	Reason      string
	Frozen      time.Duration // freeze to thaw
	Froze       int           // file systems frozen
	// Recovered: a freeze left by an earlier (killed) run was thawed.
	Recovered bool
}

// Run takes the view with take, frozen when the policy and the guest
// allow. take's error is returned as is; the guest is thawed in every
// case.
func Run(ctx context.Context, o Options, take func(ctx context.Context) error) (Result, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Policy == "" {
		o.Policy = Try
	}
	if o.Policy == Off {
		return Result{Consistency: Crash, Reason: "quiescing off"}, take(ctx)
	}
	fr, res, why := prepare(ctx, o)
	if fr == nil {
		return fallback(ctx, o, res, why, take)
	}
	defer fr.Close()
	return frozen(ctx, o, fr, res, take)
}

// prepare connects, thaws a freeze left by a killed run, and runs the
// pre-freeze hook. A nil freezer comes with the reason.
func prepare(ctx context.Context, o Options) (Freezer, Result, string) {
	var res Result
	if o.Connect == nil {
		return nil, res, "no guest agent configured"
	}
	cctx, cancel := context.WithTimeout(ctx, min(o.Timeout, 5*time.Second))
	defer cancel()
	fr, err := o.Connect(cctx)
	if err != nil {
		return nil, res, fmt.Sprintf("guest agent unreachable: %v", err)
	}
	st, err := fr.Status(cctx)
	if err != nil {
		fr.Close()
		return nil, res, fmt.Sprintf("guest agent status: %v", err)
	}
	if st == "frozen" { // an earlier run was killed inside its window
		if _, err := fr.Thaw(cctx); err != nil {
			fr.Close()
			return nil, res, fmt.Sprintf("guest left frozen by an earlier run, thaw failed: %v", err)
		}
		res.Recovered = true
	}
	if o.PreFreeze != "" {
		if out, err := hook(ctx, o.PreFreeze, o.Timeout); err != nil {
			fr.Close()
			return nil, res, fmt.Sprintf("pre-freeze hook failed: %v: %s", err, out)
		}
	}
	return fr, res, ""
}

// fallback takes a crash-consistent view, or refuses under require.
func fallback(ctx context.Context, o Options, res Result, why string, take func(context.Context) error) (Result, error) {
	res.Consistency, res.Reason = Crash, why
	if o.Policy == Require {
		return res, fmt.Errorf("%w: %s", ErrRequired, why)
	}
	return res, take(ctx)
}

// frozen freezes, takes the view and thaws, within the window.
func frozen(ctx context.Context, o Options, fr Freezer, res Result, take func(context.Context) error) (Result, error) {
	var once sync.Once
	var thawErr error
	var thawedAt time.Time
	start := time.Now()
	thaw := func() {
		once.Do(func() {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			thawedAt = time.Now()
			thawErr = thawAndCheck(tctx, fr)
		})
	}
	timer := time.AfterFunc(o.Timeout, thaw) // the window's bound
	defer timer.Stop()
	defer thaw() // every path, panics and cancellations included
	fctx, cancel := context.WithTimeout(ctx, o.Timeout)
	n, err := fr.Freeze(fctx)
	cancel()
	if err != nil {
		thaw()
		if thawErr != nil {
			return res, fmt.Errorf("freeze failed (%v), then: %w", err, thawErr)
		}
		return fallback(ctx, o, res, fmt.Sprintf("freeze failed: %v", err), take)
	}
	res.Froze = n
	terr := take(ctx)
	timedOut := !timer.Stop()
	thaw()
	res.Frozen = thawedAt.Sub(start)
	if thawErr != nil {
		return res, thawErr
	}
	runPostThaw(ctx, o, &res)
	if terr != nil {
		return res, terr
	}
	if timedOut {
		res.Consistency = Crash
		res.Reason = fmt.Sprintf("the view took longer than the %v freeze window; thawed before it was taken", o.Timeout)
		if o.Policy == Require {
			return res, fmt.Errorf("%w: %s", ErrRequired, res.Reason)
		}
		return res, nil
	}
	res.Consistency = Application
	res.Reason = fmt.Sprintf("%d file systems frozen by the guest agent for %v", n, res.Frozen.Round(time.Millisecond))
	if res.Recovered {
		res.Reason += "; thawed a freeze left by an earlier run first"
	}
	return res, nil
}

// thawAndCheck thaws (twice if need be) and checks the status.
func thawAndCheck(ctx context.Context, fr Freezer) error {
	_, err := fr.Thaw(ctx)
	if err != nil {
		_, err = fr.Thaw(ctx)
	}
	st, serr := fr.Status(ctx)
	if serr != nil || st != "thawed" {
		return fmt.Errorf("%w: status %q (%v), thaw: %v", ErrStillFrozen, st, serr, err)
	}
	return nil
}

func runPostThaw(ctx context.Context, o Options, res *Result) {
	if o.PostThaw == "" {
		return
	}
	if out, err := hook(ctx, o.PostThaw, o.Timeout); err != nil {
		res.Reason = strings.TrimSpace(fmt.Sprintf("%s; post-thaw hook failed: %v: %s", res.Reason, err, out))
	}
}

func hook(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// AgentFreezer freezes through qemu-guest-agent's socket.
type AgentFreezer struct{ c *qmp.Client }

// DialAgent connects to the guest agent's socket.
func DialAgent(ctx context.Context, path string) (Freezer, error) {
	c, err := qmp.DialAgent(ctx, path)
	if err != nil {
		return nil, err
	}
	return AgentFreezer{c}, nil
}

// Freeze implements Freezer.
func (a AgentFreezer) Freeze(ctx context.Context) (int, error) {
	var n int
	err := a.c.Execute(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// Thaw implements Freezer.
func (a AgentFreezer) Thaw(ctx context.Context) (int, error) {
	var n int
	err := a.c.Execute(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// Status implements Freezer.
func (a AgentFreezer) Status(ctx context.Context) (string, error) {
	var s string
	err := a.c.Execute(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// Close implements Freezer.
func (a AgentFreezer) Close() error { return a.c.Close() }

package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/blockwise/blockwise/internal/api"
)

// parseSchedule reads a cron expression (five fields, or @daily and the
// like) in the time zone tz, or "@every DURATION".
func parseSchedule(spec, tz string) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("%w: empty schedule", api.ErrPolicyInvalid)
	}
	if strings.Contains(spec, "TZ=") {
		return nil, fmt.Errorf("%w: schedule %q: give the time zone as timeZone", api.ErrPolicyInvalid, spec)
	}
	if tz != "" {
		if _, err := time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("%w: time zone %q: %v", api.ErrPolicyInvalid, tz, err)
		}
		spec = "CRON_TZ=" + tz + " " + spec
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: schedule %q: %v", api.ErrPolicyInvalid, spec, err)
	}
	return s, nil
}

// period is the schedule's interval around t (for the default staleness
// threshold): the gap between its next two times.
func period(s cron.Schedule, t time.Time) time.Duration {
	a := s.Next(t)
	return s.Next(a).Sub(a)
}

// due says whether a schedule that last ran at last has a time in
// (last, now]: at most one run however many times passed (a host down
// for a week runs a daily policy once).
func due(s cron.Schedule, last, now time.Time) bool {
	n := s.Next(last)
	return !n.IsZero() && !n.After(now)
}

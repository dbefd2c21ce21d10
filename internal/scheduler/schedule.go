package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/blockwise/blockwise/internal/api"
)

// parseSchedule reads a cron expression (five fields, or @daily and the
// like) in the time zone tz, or "@every DURATION" (at least 1s).
func parseSchedule(spec, tz string) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("%w: empty schedule", api.ErrPolicyInvalid)
	}
	if strings.Contains(spec, "TZ=") {
		return nil, fmt.Errorf("%w: schedule %q: give the time zone as timeZone", api.ErrPolicyInvalid, spec)
	}
	loc := time.UTC
	if tz != "" {
		var err error
		if loc, err = time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("%w: time zone %q: %v", api.ErrPolicyInvalid, tz, err)
		}
	}
	if every, ok := strings.CutPrefix(spec, "@every "); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(every)); err != nil || d < time.Second {
			return nil, fmt.Errorf("%w: schedule %q: want @every and a duration of 1s or more", api.ErrPolicyInvalid, spec)
		}
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: schedule %q: %v", api.ErrPolicyInvalid, spec, err)
	}
	if _, every := s.(cron.ConstantDelaySchedule); every {
		return s, nil
	}
	return wallSchedule{s, loc}, nil
}

// wallSchedule reads a cron schedule on the wall clock of loc. cron's own
// CRON_TZ skips a time that a daylight-saving change removes (a daily
// 02:30 backup would not run that day); here such a time runs when the
// clock has jumped past it (03:30), as time.Date normalizes it, and a
// time the clock passes twice runs once.
type wallSchedule struct {
	s   cron.Schedule // parsed in UTC: fields are wall-clock fields
	loc *time.Location
}

// Next implements cron.Schedule.
func (w wallSchedule) Next(t time.Time) time.Time {
	wall := t.In(w.loc)
	u := time.Date(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), wall.Nanosecond(), time.UTC)
	for range 1000 { // a fall-back hour maps a few wall times before t
		if u = w.s.Next(u); u.IsZero() {
			return u
		}
		if n := time.Date(u.Year(), u.Month(), u.Day(), u.Hour(), u.Minute(), u.Second(), 0, w.loc); n.After(t) {
			return n
		}
	}
	return time.Time{}
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

package backup

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

// Policy says which restore points to keep, like restic's forget: the
// newest Last points, the newest point of each of the last N hours, days,
// weeks, months and years that have one, and every point taken Within a
// span before the disk's newest one. A zero policy keeps all.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       Within
}

// Within is a span of calendar time written like restic's --keep-within:
// "7d", "1y6m", "2d12h" (years, months, days, hours, each at most once,
// in that order).
type Within struct {
	Years, Months, Days, Hours int
}

// ErrBadSpan is returned for a span that does not parse.
var ErrBadSpan = errors.New(`want a span like "7d", "1y6m" or "2d12h" (y, m, d, h)`)

// Set parses s (it makes *Within a flag value).
func (w *Within) Set(s string) error {
	var v Within
	rest := s
	for _, u := range []struct {
		unit byte
		dst  *int
	}{{'y', &v.Years}, {'m', &v.Months}, {'d', &v.Days}, {'h', &v.Hours}} {
		i := strings.IndexByte(rest, u.unit)
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n < 0 || rest[:i][0] == '+' {
			return fmt.Errorf("%q: %w", s, ErrBadSpan)
		}
		*u.dst, rest = n, rest[i+1:]
	}
	if rest != "" || v == (Within{}) { // a zero span keeps nothing: leave the flag out
		return fmt.Errorf("%q: %w", s, ErrBadSpan)
	}
	*w = v
	return nil
}

// String implements fmt.Stringer.
func (w Within) String() string {
	var b strings.Builder
	for _, u := range []struct {
		n    int
		unit string
	}{{w.Years, "y"}, {w.Months, "m"}, {w.Days, "d"}, {w.Hours, "h"}} {
		if u.n != 0 {
			fmt.Fprintf(&b, "%d%s", u.n, u.unit)
		}
	}
	return b.String()
}

// Type names the flag's value in help.
func (w *Within) Type() string { return "span" }

// since is the start of the span that ends at t.
func (w Within) since(t time.Time) time.Time {
	return t.AddDate(-w.Years, -w.Months, -w.Days).Add(-time.Duration(w.Hours) * time.Hour)
}

// Empty reports whether the policy keeps everything.
func (p Policy) Empty() bool { return p == Policy{} }

// Decision is the verdict on one restore point.
type Decision struct {
	Manifest *repo.Manifest
	Keep     bool
	Reasons  []string // why kept
}

type bucket struct {
	name string
	n    int
	key  func(time.Time) string
}

// Apply decides per disk (points of different disks never compete).
// Decisions come newest first within each disk.
func (p Policy) Apply(ms []*repo.Manifest) []Decision {
	byDisk := map[string][]*repo.Manifest{}
	var disks []string
	for _, m := range ms {
		if _, ok := byDisk[m.Disk]; !ok {
			disks = append(disks, m.Disk)
		}
		byDisk[m.Disk] = append(byDisk[m.Disk], m)
	}
	sort.Strings(disks)
	var out []Decision
	for _, d := range disks {
		out = append(out, p.applyOne(byDisk[d])...)
	}
	return out
}

func (p Policy) applyOne(ms []*repo.Manifest) []Decision {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Time.After(ms[j].Time) })
	buckets := []bucket{
		{"last", p.Last, func(t time.Time) string { return t.String() }},
		{"hourly", p.Hourly, func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{"daily", p.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string {
			y, w := t.ISOWeek()
			return time.Date(y, 1, w, 0, 0, 0, 0, time.UTC).String()
		}},
		{"monthly", p.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
	out := make([]Decision, len(ms))
	for i, m := range ms {
		out[i] = Decision{Manifest: m, Keep: p.Empty()}
	}
	for _, b := range buckets {
		seen := map[string]bool{}
		for i, m := range ms {
			k := b.key(m.Time.Local())
			if len(seen) >= b.n || seen[k] {
				continue
			}
			seen[k] = true
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, b.name)
		}
	}
	if p.Within != (Within{}) && len(ms) > 0 {
		from := p.Within.since(ms[0].Time)
		for i, m := range ms {
			if m.Time.After(from) {
				out[i].Keep = true
				out[i].Reasons = append(out[i].Reasons, "within "+p.Within.String())
			}
		}
	}
	return out
}

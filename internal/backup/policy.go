package backup

import (
	"sort"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

// Policy says which restore points to keep, like restic's forget: the
// newest Last points, and the newest point of each of the last N hours,
// days, weeks, months and years that have one. A zero policy keeps all.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
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
	return out
}

package backup

import (
	"errors"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

func TestPolicy(t *testing.T) {
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.Local)
	var ms []*repo.Manifest
	for i := 0; i < 10; i++ { // one point every 12 hours, newest first after sorting
		ms = append(ms, &repo.Manifest{Meta: repo.Meta{Disk: "vm", Time: base.Add(-time.Duration(i) * 12 * time.Hour)}})
	}
	ms = append(ms, &repo.Manifest{Meta: repo.Meta{Disk: "db", Time: base.Add(-1000 * time.Hour)}})
	tests := []struct {
		name string
		p    Policy
		keep int
	}{
		{"empty keeps all", Policy{}, 11},
		{"last 3", Policy{Last: 3}, 3 + 1},
		{"daily 2", Policy{Daily: 2}, 2 + 1},
		{"last 1 + daily 3", Policy{Last: 1, Daily: 3}, 3 + 1},
		{"hourly 100", Policy{Hourly: 100}, 11},
		{"yearly 1", Policy{Yearly: 1}, 2},
		// Relative to each disk's newest point: vm's at base, db's alone.
		{"within 1d", Policy{Within: Within{Days: 1}}, 2 + 1},
		{"within 1d1h", Policy{Within: Within{Days: 1, Hours: 1}}, 3 + 1},
		{"within 2d + last 5", Policy{Within: Within{Days: 2}, Last: 5}, 5 + 1},
		{"within 1m", Policy{Within: Within{Months: 1}}, 11},
	}
	for _, tc := range tests {
		kept := 0
		for _, d := range tc.p.Apply(ms) {
			if d.Keep {
				kept++
			}
		}
		if kept != tc.keep {
			t.Errorf("%s: kept %d, want %d", tc.name, kept, tc.keep)
		}
	}
}

func TestWithinParse(t *testing.T) {
	tests := []struct {
		in   string
		want Within
		ok   bool
	}{
		{"7d", Within{Days: 7}, true},
		{"1y6m", Within{Years: 1, Months: 6}, true},
		{"2d12h", Within{Days: 2, Hours: 12}, true},
		{"1y2m3d4h", Within{1, 2, 3, 4}, true},
		{"36h", Within{Hours: 36}, true},
		{"", Within{}, false},
		{"0d", Within{}, false},
		{"7", Within{}, false},
		{"d", Within{}, false},
		{"7d1y", Within{}, false},
		{"-1d", Within{}, false},
		{"+1d", Within{}, false},
		{"1w", Within{}, false},
		{"1d1d", Within{}, false},
		{"1.5d", Within{}, false},
	}
	for _, tc := range tests {
		var w Within
		err := w.Set(tc.in)
		if (err == nil) != tc.ok || w != tc.want {
			t.Errorf("Set(%q) = %+v, %v; want %+v, ok=%v", tc.in, w, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadSpan) {
			t.Errorf("Set(%q): %v is not ErrBadSpan", tc.in, err)
		}
		if tc.ok && w.String() != tc.in {
			t.Errorf("String() = %q, want %q", w.String(), tc.in)
		}
	}
}

// TestWithinCalendar: months and years are calendar spans, not fixed
// hours, like restic's.
func TestWithinCalendar(t *testing.T) {
	newest := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	w := Within{Months: 1}
	if got := w.since(newest); !got.Equal(time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)) { // Feb 31 = Mar 3
		t.Errorf("1m before %v: %v", newest, got)
	}
	w = Within{Years: 1, Hours: 12}
	if got := w.since(newest); !got.Equal(time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("1y12h before %v: %v", newest, got)
	}
}

// FuzzWithin: any --keep-within text parses to a non-zero span that
// prints back to text parsing the same, or is refused with ErrBadSpan.
func FuzzWithin(f *testing.F) {
	for _, s := range []string{"7d", "1y6m", "2d12h", "", "0d", "+1d", "99999999999999999999d", "1y1y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var w Within
		if err := w.Set(s); err != nil {
			if !errors.Is(err, ErrBadSpan) {
				t.Fatalf("Set(%q): untyped error %v", s, err)
			}
			return
		}
		if w == (Within{}) {
			t.Fatalf("Set(%q) accepted a zero span", s)
		}
		var again Within
		if err := again.Set(w.String()); err != nil || again != w {
			t.Fatalf("Set(%q) = %+v, which prints %q and parses back to %+v, %v", s, w, w.String(), again, err)
		}
	})
}

package scheduler

import (
	"testing"
	"time"
)

// TestScheduleDue: cron in a time zone (daylight saving included) and
// @every; due fires once for any number of missed times.
func TestScheduleDue(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec, tz   string
		last, want time.Time // want: the next time after last
	}{
		{"0 2 * * *", "Europe/Paris", time.Date(2026, 3, 28, 12, 0, 0, 0, paris), time.Date(2026, 3, 29, 3, 0, 0, 0, paris)}, // 02:00 does not exist that night
		{"0 2 * * *", "Europe/Paris", time.Date(2026, 7, 1, 12, 0, 0, 0, paris), time.Date(2026, 7, 2, 2, 0, 0, 0, paris)},
		{"30 1 * * 1", "", time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 1, 30, 0, 0, time.UTC)},
		{"@every 15m", "", time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 0, 15, 0, 0, time.UTC)},
		{"@daily", "Europe/Paris", time.Date(2026, 12, 2, 0, 30, 0, 0, paris), time.Date(2026, 12, 3, 0, 0, 0, 0, paris)},
	} {
		s, err := parseSchedule(tc.spec, tc.tz)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if got := s.Next(tc.last); !got.Equal(tc.want) {
			t.Errorf("%s in %q after %s: %s, want %s", tc.spec, tc.tz, tc.last, got, tc.want)
		}
		if due(s, tc.last, tc.want.Add(-time.Second)) || !due(s, tc.last, tc.want) || !due(s, tc.last, tc.want.Add(72*time.Hour)) {
			t.Errorf("%s: due around %s", tc.spec, tc.want)
		}
	}
	// Autumn: 02:30 happens twice in Paris on 2026-10-25; it runs once.
	s, _ := parseSchedule("30 2 * * *", "Europe/Paris")
	first := s.Next(time.Date(2026, 10, 25, 0, 0, 0, 0, paris))
	second := s.Next(first)
	if first.Day() != 25 || second.Day() != 26 || second.Hour() != 2 || second.Minute() != 30 {
		t.Errorf("fall back: %s then %s", first, second)
	}
	for _, bad := range [][2]string{{"", ""}, {"* * *", ""}, {"0 2 * * *", "Nowhere/City"}, {"CRON_TZ=UTC 0 2 * * *", ""}, {"@every -1m", ""}} {
		if _, err := parseSchedule(bad[0], bad[1]); err == nil {
			t.Errorf("%q in %q parsed", bad[0], bad[1])
		}
	}
}

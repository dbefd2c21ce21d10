package backup

import (
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

package recovery

import (
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/backup"
)

// TestCheckOverlay: the CLI's recover --overlay against the directory's
// recover.json: a new directory starts a recovery, a recorded one is
// continued only with resume and only into its own disk.
func TestCheckOverlay(t *testing.T) {
	fresh, taken := t.TempDir(), t.TempDir()
	if err := backup.SaveRecoverState(taken, backup.RecoverState{Point: "p", Disk: "new", Phase: backup.PhaseCopying}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir, disk string
		resume          bool
		want            error
		state           bool
	}{
		{"new directory", fresh, "new", false, nil, false},
		{"resume of nothing", fresh, "new", true, backup.ErrNoRecovery, false},
		{"recorded, no resume", taken, "new", false, ErrOverlayTaken, false},
		{"recorded, another disk", taken, "other", true, ErrOverlayTaken, false},
		{"resume", taken, "new", true, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := CheckOverlay(c.dir, c.disk, c.resume)
			if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) || (st != nil) != c.state {
				t.Fatalf("CheckOverlay(%s, %v): %+v %v, want %v", c.disk, c.resume, st, err, c.want)
			}
		})
	}
}

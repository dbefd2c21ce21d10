package jobs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	wire "github.com/blockwise/blockwise/api"
)

// history imports n ended backups of 700-byte records, as the scheduler
// writes them, into the store at path.
func history(t *testing.T, s *Store, n int) {
	t.Helper()
	now := time.Now().UTC()
	sum, _ := json.Marshal(map[string]any{"id": strings.Repeat("ab", 32), "phases": map[string]float64{"copy": 2.5, "commit": 0.3},
		"size": 1 << 30, "changedBytes": 8 << 20, "readBytes": 8 << 20, "newBytes": 6 << 20, "storedBytes": 3 << 20, "transport": "san"})
	js := make([]wire.Job, n)
	for i := range js {
		js[i] = wire.Job{Kind: wire.JobBackup, Policy: "p", Source: fmt.Sprintf("d%04d", i%100), State: wire.JobSucceeded,
			Created: now, Started: &now, Ended: &now, Summary: sum,
			Progress: wire.JobProgress{Stages: []wire.JobStage{{Name: "prepare", Seconds: 0.2}, {Name: "copy", Seconds: 2.8}}}}
	}
	if _, err := s.Import(js); err != nil {
		t.Fatal(err)
	}
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestHistoryCompact: appended records fill their pages (the file is
// not twice the records: invariant 9); a history mostly dropped by
// retention is compacted when reopened (invariant 10), keeping every
// job left, its log and the by-source index; a stray ".compact" file
// of a crash is removed; a dense file is left alone.
func TestHistoryCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	o := Options{NoSync: true, CompactMin: 1 << 20}
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	history(t, s, 4000) // ~2.8 MB of records
	r, _ := s.Begin(Spec{Kind: wire.JobBackup, Policy: "p", Source: "d0001"})
	r.Logf("info", "kept")
	r.Finish(nil, nil)
	var used int64 // the pages written, however far the file grew ahead
	s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	s.Close()
	full := size(t, path)
	if used > 4000*820 {
		t.Fatalf("4,000 records of ~700 bytes take %d bytes: pages not filled", used)
	}
	if s, err = Open(path, o); err != nil { // dense: not compacted
		t.Fatal(err)
	}
	s.Close()
	if got := size(t, path); got != full {
		t.Fatalf("a dense file was rewritten: %d -> %d bytes", full, got)
	}
	// Retention drops all but 200: most pages become free.
	o.MaxJobs = 200
	s = open(t, path, o)
	r, _ = s.Begin(Spec{Kind: wire.JobBackup, Policy: "p", Source: "d0002"})
	r.Finish(nil, nil)
	s.Close()
	if err := os.WriteFile(path+".compact", []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, o)
	if got := size(t, path); got > full/4 {
		t.Fatalf("after retention and reopen: %d bytes (was %d)", got, full)
	}
	if _, err := os.Stat(path + ".compact"); !os.IsNotExist(err) {
		t.Fatalf("stray compact file: %v", err)
	}
	list, err := s.List(Filter{})
	if err != nil || len(list) != 200 {
		t.Fatalf("jobs after compaction: %d %v", len(list), err)
	}
	if log, err := s.Log(list[1].ID, 0); err != nil || len(log) != 1 || log[0].Msg != "kept" {
		t.Fatalf("log after compaction: %+v %v", log, err)
	}
	if bySrc, err := s.List(Filter{Source: "d0002"}); err != nil || len(bySrc) != 3 {
		t.Fatalf("by source after compaction: %d %v", len(bySrc), err)
	}
}

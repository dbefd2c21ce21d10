package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T, path string, o Options) *Store {
	t.Helper()
	s, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestJobEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool
		err    error
		want   string
	}{
		{"success", false, nil, wire.JobSucceeded},
		{"failure", false, errors.New("boom"), wire.JobFailed},
		{"canceled", true, fmt.Errorf("copy: %w", context.Canceled), wire.JobCanceled},
		// A context.Canceled nobody asked for (the host stopping) is a failure.
		{"unasked cancel", false, context.Canceled, wire.JobFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1e9, 0)}
			s := open(t, filepath.Join(t.TempDir(), "jobs.db"), Options{Now: clk.Now})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := s.Begin(Spec{Kind: wire.JobBackup, Policy: "p", Source: "d1", Cancel: cancel})
			if err != nil {
				t.Fatal(err)
			}
			r.Stage("copy")
			clk.Add(time.Second)
			r.Progress(100, 1000)
			clk.Add(time.Second)
			r.Progress(300, 1000)
			v := r.View()
			if v.State != wire.JobRunning || v.Progress.Stage != "copy" || v.Progress.Done != 300 || v.Progress.Rate <= 0 || v.Progress.ETASeconds <= 0 {
				t.Fatalf("live view %+v", v)
			}
			if tc.cancel {
				if _, err := s.Cancel(r.ID()); err != nil {
					t.Fatal(err)
				}
				if ctx.Err() == nil {
					t.Fatal("cancel did not reach the runner")
				}
			}
			r.Logf("info", "read %d bytes", 300)
			r.Finish(map[string]int{"readBytes": 300}, tc.err)
			j, err := s.Get(r.ID())
			if err != nil {
				t.Fatal(err)
			}
			if j.State != tc.want || j.Ended == nil || string(j.Summary) != `{"readBytes":300}` || len(j.Progress.Stages) != 1 || j.Progress.Stages[0].Seconds != 2 {
				t.Fatalf("ended job %+v", j)
			}
			if tc.err != nil && j.Error == "" {
				t.Fatal("no error kept")
			}
			if _, err := s.Cancel(r.ID()); !errors.Is(err, ErrEnded) {
				t.Fatalf("cancel of an ended job: %v", err)
			}
		})
	}
}

func TestListFilterAndLog(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "jobs.db"), Options{})
	var ids []string
	for i, src := range []string{"a", "b", "a"} {
		r, err := s.Begin(Spec{Kind: wire.JobBackup, Source: src})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
		for n := range 3 {
			r.Logf("info", "line %d", n+1)
		}
		if i < 2 {
			r.Finish(nil, nil)
		}
	}
	all, err := s.List(Filter{})
	if err != nil || len(all) != 3 || all[0].ID != ids[2] || all[0].State != wire.JobRunning {
		t.Fatalf("list %v %+v", err, all)
	}
	a, _ := s.List(Filter{Source: "a"})
	if b, _ := s.List(Filter{Source: "b"}); len(b) != 1 || b[0].ID != ids[1] {
		t.Fatalf("source b: %+v", b)
	}
	if a1, _ := s.List(Filter{Source: "a", Limit: 1}); len(a1) != 1 || a1[0].ID != ids[2] || a1[0].State != wire.JobRunning {
		t.Fatalf("source a, newest: %+v", a1)
	}
	if none, _ := s.List(Filter{Source: "zz"}); len(none) != 0 {
		t.Fatalf("source zz: %+v", none)
	}
	run, _ := s.List(Filter{State: wire.JobRunning})
	lim, _ := s.List(Filter{Limit: 1})
	if len(a) != 2 || len(run) != 1 || len(lim) != 1 {
		t.Fatalf("filters: %d %d %d", len(a), len(run), len(lim))
	}
	lines, err := s.Log(ids[0], 1)
	if err != nil || len(lines) != 2 || lines[0].N != 2 || lines[1].Msg != "line 3" {
		t.Fatalf("log after 1: %v %+v", err, lines)
	}
	for _, bad := range []string{"job-99", "nope", "job-0", "job-x"} {
		if _, err := s.Get(bad); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get %s: %v", bad, err)
		}
		if _, err := s.Log(bad, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("log %s: %v", bad, err)
		}
	}
}

func TestRetention(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	s := open(t, filepath.Join(t.TempDir(), "jobs.db"), Options{MaxJobs: 5, MaxAge: time.Hour, Now: clk.Now})
	long, _ := s.Begin(Spec{Kind: wire.JobBackup}) // running: never dropped
	var ids []string
	for range 8 {
		r, _ := s.Begin(Spec{Kind: wire.JobCheck, Source: "s"})
		r.Logf("info", "x")
		r.Finish(nil, nil)
		ids = append(ids, r.ID())
	}
	all, _ := s.List(Filter{})
	if len(all) != 5 || all[len(all)-1].ID != long.ID() {
		t.Fatalf("kept %d jobs, oldest %s", len(all), all[len(all)-1].ID)
	}
	if _, err := s.Log(ids[0], 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped job's log: %v", err)
	}
	// The by-source index lost the dropped ones too.
	if bySrc, err := s.List(Filter{Source: "s"}); err != nil || len(bySrc) != 4 || bySrc[0].ID != ids[7] || bySrc[3].ID != ids[4] {
		t.Fatalf("by source after retention: %v %+v", err, bySrc)
	}
	clk.Add(2 * time.Hour)
	r, _ := s.Begin(Spec{Kind: wire.JobCheck})
	r.Finish(nil, nil)
	all, _ = s.List(Filter{})
	if len(all) != 2 { // the running one and the fresh one; the rest aged out
		t.Fatalf("after MaxAge: %d jobs", len(all))
	}
	long.Finish(nil, nil)
}

// TestKilledHostLeavesInterrupted: a process SIGKILLed while a job runs
// leaves it running on disk; the next Open marks it interrupted, and a
// job that ended before the kill keeps its state.
func TestKilledHostLeavesInterrupted(t *testing.T) {
	if path := os.Getenv("JOBS_KILL_CHILD"); path != "" {
		s, err := Open(path, Options{})
		if err != nil {
			os.Exit(3)
		}
		done, _ := s.Begin(Spec{Kind: wire.JobCheck})
		done.Finish(nil, nil)
		r, _ := s.Begin(Spec{Kind: wire.JobBackup, Source: "d"})
		r.Stage("copy")
		fmt.Println("running", r.ID())
		select {} // killed here
	}
	path := filepath.Join(t.TempDir(), "jobs.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledHostLeavesInterrupted$")
	cmd.Env = append(os.Environ(), "JOBS_KILL_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	var id string
	fmt.Sscanf(string(buf[:n]), "running %s", &id)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if id == "" {
		t.Fatalf("child said %q", buf[:n])
	}
	s := open(t, path, Options{})
	j, err := s.Get(id)
	if err != nil || j.State != wire.JobInterrupted || j.Ended == nil || j.Error == "" {
		t.Fatalf("after the kill: %v %+v", err, j)
	}
	first, _ := s.Get("job-1")
	if first.State != wire.JobSucceeded {
		t.Fatalf("ended job became %s", first.State)
	}
}

func TestChangedWakes(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "jobs.db"), Options{})
	ch := s.Changed()
	r, _ := s.Begin(Spec{Kind: wire.JobBackup})
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Begin did not notify")
	}
	ch = s.Changed()
	r.Progress(1, 2)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Progress did not notify")
	}
	r.Finish(nil, nil)
}

func TestImport(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "jobs.db"), Options{MaxJobs: 3})
	now := time.Now().UTC()
	in := []wire.Job{{Kind: wire.JobBackup, State: wire.JobSucceeded, Created: now, Ended: &now}, {Kind: wire.JobBackup, State: wire.JobFailed, Created: now, Ended: &now}}
	ids, err := s.Import(in)
	if err != nil || len(ids) != 2 || ids[0] != "job-1" {
		t.Fatalf("import %v %v", ids, err)
	}
	if _, err := s.Import([]wire.Job{{Kind: wire.JobBackup, State: wire.JobRunning}}); err == nil {
		t.Fatal("imported a running job")
	}
	for range 3 { // retention counts imported jobs
		r, _ := s.Begin(Spec{Kind: wire.JobCheck})
		r.Finish(nil, nil)
	}
	if all, _ := s.List(Filter{}); len(all) != 3 {
		t.Fatalf("%d jobs kept, want 3", len(all))
	}
}

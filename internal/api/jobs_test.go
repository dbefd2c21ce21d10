package api_test

import (
	"context"
	"errors"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/jobs"
)

// TestJobsAPI: a consolidation (the old /v1/tasks) is a job too; a job a
// service runs shows its live progress, its log (long-polled as log -f
// does), and is canceled through the API.
func TestJobsAPI(t *testing.T) {
	e := apitest.Start(t)
	c, ctx := e.Client, context.Background()
	c.CreateDisk(ctx, client.CreateDiskRequest{Name: "vm1", Size: 8 * mib})
	c.CreateSnapshot(ctx, "vm1", "s1", "")
	task, err := c.DeleteSnapshot(ctx, "vm1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitTask(ctx, task.ID)
	var cons []client.Job
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); { // the task's watcher records the end
		if cons, err = c.ListJobs(ctx, client.JobFilter{Kind: wire.JobConsolidate}); err == nil && len(cons) == 1 && cons[0].Done() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(cons) != 1 || cons[0].State != wire.JobSucceeded || cons[0].Source != "vm1" {
		t.Fatalf("consolidation job: %v %+v", err, cons)
	}

	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run, err := e.Jobs.Begin(jobs.Spec{Kind: wire.JobBackup, Policy: "nightly", Source: "vm1", Cancel: cancel})
	if err != nil {
		t.Fatal(err)
	}
	run.Stage("copy")
	run.Progress(10, 100)
	got, err := c.Job(ctx, run.ID())
	if err != nil || got.State != wire.JobRunning || got.Progress.Stage != "copy" || got.Progress.Done != 10 {
		t.Fatalf("live job %+v %v", got, err)
	}
	// log -f: a waiting request returns as soon as a line arrives.
	lines := make(chan *client.JobLog, 1)
	go func() {
		l, _ := c.JobLogLines(ctx, run.ID(), 0, 10*time.Second)
		lines <- l
	}()
	time.Sleep(50 * time.Millisecond)
	run.Logf("info", "read %d bytes", 10)
	select {
	case l := <-lines:
		if l == nil || len(l.Lines) != 1 || l.Lines[0].Msg != "read 10 bytes" {
			t.Fatalf("log %+v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("log wait did not wake on a new line")
	}
	if _, err := c.CancelJob(ctx, run.ID()); err != nil {
		t.Fatal(err)
	}
	<-jctx.Done()
	run.Finish(nil, jctx.Err())
	end, err := c.WaitJob(ctx, run.ID())
	if err != nil || end.State != wire.JobCanceled {
		t.Fatalf("canceled job %+v %v", end, err)
	}
	if _, err := c.CancelJob(ctx, run.ID()); !errors.Is(err, client.ErrJobEnded) {
		t.Fatalf("cancel of an ended job: %v", err)
	}
	for _, id := range []string{"job-999", "bogus"} {
		if _, err := c.Job(ctx, id); !errors.Is(err, client.ErrJobNotFound) || !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("job %s: %v", id, err)
		}
	}
	list, err := c.ListJobs(ctx, client.JobFilter{Policy: "nightly", Limit: 5})
	if err != nil || len(list) != 1 || list[0].ID != run.ID() {
		t.Fatalf("filtered %+v %v", list, err)
	}
	var p wire.Problem
	for _, q := range []string{"/v1/jobs?limit=x", "/v1/jobs?since=yesterday", "/v1/jobs/" + run.ID() + "?wait=soon", "/v1/jobs/" + run.ID() + "/log?after=-1"} {
		if st := raw(t, e, "GET", q, "", &p); st != 400 {
			t.Fatalf("%s: %d", q, st)
		}
	}
}

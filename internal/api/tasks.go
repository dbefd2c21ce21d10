package api

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/jobs"
)

// Ended tasks are kept for keepEnded so a client that polls late still
// learns the result, and at most maxEnded of them to bound memory.
const (
	keepEnded = time.Hour
	maxEnded  = 1000
	maxWait   = 5 * time.Minute
)

// runner is what a task follows: an engine consolidation (*disk.Task)
// or a service's operation (FuncTask).
type runner interface {
	Progress() (done, total int64)
	Done() <-chan struct{}
	Err() error
}

// FuncTask is a service's long operation run as a task (StartTask).
type FuncTask struct {
	done, total atomic.Int64
	end         chan struct{}
	err         error
	sum         any // set by the operation before it returns
}

// SetSummary makes v the summary of the task's job (what the operation
// did); call it before the operation returns.
func (f *FuncTask) SetSummary(v any) { f.sum = v }

// SetProgress records how far the operation is.
func (f *FuncTask) SetProgress(done, total int64) { f.done.Store(done); f.total.Store(total) }

// Progress implements runner.
func (f *FuncTask) Progress() (int64, int64) { return f.done.Load(), f.total.Load() }

// Done is closed when the operation ended.
func (f *FuncTask) Done() <-chan struct{} { return f.end }

// Err is the operation's error once Done.
func (f *FuncTask) Err() error { return f.err }

// StartTask runs fn as a task of kind about disk (a name, or a group's)
// and returns it at once; fn's context ends when the server shuts down.
// Its record in the job history is of jobKind (wire.JobReplication...),
// its stage the task's kind.
func (s *Server) StartTask(jobKind, kind, diskName string, fn func(ctx context.Context, t *FuncTask) error) wire.Task {
	f := &FuncTask{end: make(chan struct{})}
	e := s.tasks.add(jobKind, kind, diskName, "", f)
	go func() {
		defer close(f.end)
		f.err = fn(s.ctx, f)
	}()
	return e.view()
}

type task struct {
	id, kind, disk, snap string
	t                    runner
	created              time.Time
	job                  *jobs.Run // its record in the job history, or nil

	mu       sync.Mutex
	finished time.Time
}

// markFinished records the end time once, by whoever sees the end first:
// the watcher may not have run yet when a client observes Done.
func (e *task) markFinished() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.finished.IsZero() {
		e.finished = time.Now().UTC()
	}
	return e.finished
}

func (e *task) view() wire.Task {
	done, total := e.t.Progress()
	v := wire.Task{ID: e.id, Kind: e.kind, Disk: e.disk, Snapshot: e.snap, State: wire.TaskRunning,
		Done: done, Total: total, Created: e.created}
	if e.job != nil {
		v.Job = e.job.ID()
	}
	select {
	case <-e.t.Done():
		v.State = wire.TaskDone
		if err := e.t.Err(); err != nil {
			v.State, v.Error = wire.TaskFailed, err.Error()
		}
		f := e.markFinished()
		v.Finished = &f
	default:
	}
	return v
}

// tasks is the registry of long operations.
type tasks struct {
	jobs *jobs.Store // nil: none kept
	dur  *prometheus.HistogramVec
	mu   sync.Mutex
	seq  uint64
	m    map[string]*task
}

func newTasks(reg prometheus.Registerer, js *jobs.Store) *tasks {
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "blockwise_task_duration_seconds", Help: "Duration of ended tasks.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"kind", "state"})
	reg.MustRegister(dur)
	return &tasks{jobs: js, dur: dur, m: map[string]*task{}}
}

func (ts *tasks) add(jobKind, kind, diskName, snap string, t runner) *task {
	ts.mu.Lock()
	ts.seq++
	e := &task{id: "task-" + strconv.FormatUint(ts.seq, 10), kind: kind, disk: diskName, snap: snap, t: t, created: time.Now().UTC()}
	ts.m[e.id] = e
	ts.mu.Unlock()
	if ts.jobs != nil { // a task is a job too
		if e.job, _ = ts.jobs.Begin(jobs.Spec{Kind: jobKind, Source: diskName}); e.job != nil {
			e.job.Stage(kind)
			if snap != "" {
				e.job.Logf("info", "%s of snapshot %s (task %s)", kind, snap, e.id)
			} else {
				e.job.Logf("info", "%s of %s (task %s)", kind, diskName, e.id)
			}
		}
	}
	go ts.watch(e)
	return e
}

// watch records the end of a task; the engine ends every task (a closed
// disk pauses its consolidation with an error), so this goroutine ends.
func (ts *tasks) watch(e *task) {
	if e.job != nil { // the job's progress follows the task's while it runs
		tick := time.NewTicker(500 * time.Millisecond)
		for running := true; running; {
			select {
			case <-e.t.Done():
				running = false
			case <-tick.C:
				e.job.Progress(e.t.Progress())
			}
		}
		tick.Stop()
	}
	<-e.t.Done()
	end := e.markFinished()
	if e.job != nil {
		done, total := e.t.Progress()
		e.job.Progress(done, total)
		var sum any = map[string]any{"task": e.id, "snapshot": e.snap}
		if f, ok := e.t.(*FuncTask); ok && f.sum != nil { // f.end is closed: f.sum is set
			sum = f.sum
		}
		e.job.Finish(sum, e.t.Err())
	}
	ts.dur.WithLabelValues(e.kind, e.view().State).Observe(end.Sub(e.created).Seconds())
	ts.prune(time.Now().UTC())
}

func (ts *tasks) prune(now time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var ended []*task
	for _, e := range ts.m {
		e.mu.Lock()
		f := e.finished
		e.mu.Unlock()
		if !f.IsZero() && now.Sub(f) > keepEnded {
			delete(ts.m, e.id)
		} else if !f.IsZero() {
			ended = append(ended, e)
		}
	}
	sort.Slice(ended, func(i, j int) bool { return ended[i].created.Before(ended[j].created) })
	for len(ended) > maxEnded {
		delete(ts.m, ended[0].id)
		ended = ended[1:]
	}
}

func (ts *tasks) get(id string) *task {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.m[id]
}

func (ts *tasks) list() []wire.Task {
	ts.mu.Lock()
	all := make([]*task, 0, len(ts.m))
	for _, e := range ts.m {
		all = append(all, e)
	}
	ts.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].created.Before(all[j].created) })
	out := make([]wire.Task, 0, len(all))
	for _, e := range all {
		out = append(out, e.view())
	}
	return out
}

func (s *Server) listTasks(r *http.Request) (int, any, error) {
	return http.StatusOK, s.tasks.list(), nil
}

// getTask answers at once, or with ?wait=DURATION when the task ends or
// the wait (at most maxWait) runs out, whichever comes first.
func (s *Server) getTask(r *http.Request) (int, any, error) {
	e := s.tasks.get(r.PathValue("id"))
	if e == nil {
		return 0, nil, problem(http.StatusNotFound, wire.ProblemTaskNotFound, "task "+r.PathValue("id"))
	}
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, nil, badRequest(fmt.Sprintf("wait %q is not a duration such as 30s", v))
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(d, maxWait))
		defer cancel()
		select {
		case <-e.t.Done():
		case <-ctx.Done():
		}
	}
	return http.StatusOK, e.view(), nil
}

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
}

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
func (s *Server) StartTask(kind, diskName string, fn func(ctx context.Context, t *FuncTask) error) wire.Task {
	f := &FuncTask{end: make(chan struct{})}
	e := s.tasks.add(kind, diskName, "", f)
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
	dur *prometheus.HistogramVec
	mu  sync.Mutex
	seq uint64
	m   map[string]*task
}

func newTasks(reg prometheus.Registerer) *tasks {
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "blockwise_task_duration_seconds", Help: "Duration of ended tasks.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"kind", "state"})
	reg.MustRegister(dur)
	return &tasks{dur: dur, m: map[string]*task{}}
}

func (ts *tasks) add(kind, diskName, snap string, t runner) *task {
	ts.mu.Lock()
	ts.seq++
	e := &task{id: "task-" + strconv.FormatUint(ts.seq, 10), kind: kind, disk: diskName, snap: snap, t: t, created: time.Now().UTC()}
	ts.m[e.id] = e
	ts.mu.Unlock()
	go ts.watch(e)
	return e
}

// watch records the end of a task; the engine ends every task (a closed
// disk pauses its consolidation with an error), so this goroutine ends.
func (ts *tasks) watch(e *task) {
	<-e.t.Done()
	end := e.markFinished()
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

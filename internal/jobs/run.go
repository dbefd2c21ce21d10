package jobs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	wire "github.com/blockwise/blockwise/api"
)

// Run is the handle of a running job. Its methods are safe for
// concurrent use; after Finish they do nothing.
type Run struct {
	s      *Store
	key    []byte
	cancel context.CancelFunc

	mu         sync.Mutex
	job        wire.Job
	canceled   bool
	ended      bool
	stageStart time.Time
	// rate: bytes done at the last sample and when.
	lastDone int64
	lastAt   time.Time
}

// ID is the job's ID.
func (r *Run) ID() string { return r.job.ID }

// View is the job as it stands.
func (r *Run) View() wire.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.job
	j.Progress.Stages = append([]wire.JobStage(nil), j.Progress.Stages...)
	return j
}

// Start makes a queued job running.
func (r *Run) Start() {
	now := r.s.opts.Now()
	r.mu.Lock()
	if r.ended || r.job.State != wire.JobQueued {
		r.mu.Unlock()
		return
	}
	utc := now.UTC()
	r.job.State, r.job.Started, r.stageStart = wire.JobRunning, &utc, now
	j := r.job
	r.mu.Unlock()
	r.save(j, nil)
}

// Stage starts a new stage: the previous one's time is recorded, the
// byte counters restart, and the job is written to the database.
func (r *Run) Stage(name string) {
	now := r.s.opts.Now()
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	r.closeStage(now)
	r.job.Progress.Stage, r.stageStart = name, now
	r.job.Progress.Done, r.job.Progress.Total, r.job.Progress.Rate, r.job.Progress.ETASeconds = 0, 0, 0, 0
	r.lastDone, r.lastAt = 0, now
	j := r.job
	r.mu.Unlock()
	r.save(j, nil)
}

// closeStage records the running stage's time (r.mu held).
func (r *Run) closeStage(now time.Time) {
	if r.job.Progress.Stage != "" {
		r.job.Progress.Stages = append(r.job.Progress.Stages,
			wire.JobStage{Name: r.job.Progress.Stage, Seconds: now.Sub(r.stageStart).Seconds()})
	}
}

// Progress reports bytes done of total in the current stage; the rate is
// smoothed over samples at least half a second apart.
func (r *Run) Progress(done, total int64) {
	now := r.s.opts.Now()
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	p := &r.job.Progress
	p.Done, p.Total = done, total
	if dt := now.Sub(r.lastAt).Seconds(); dt >= 0.5 {
		inst := float64(done-r.lastDone) / dt
		if p.Rate == 0 {
			p.Rate = inst
		} else {
			p.Rate = 0.7*p.Rate + 0.3*inst
		}
		r.lastDone, r.lastAt = done, now
	}
	if p.Rate > 0 && total > done {
		p.ETASeconds = float64(total-done) / p.Rate
	} else {
		p.ETASeconds = 0
	}
	r.mu.Unlock()
	r.s.notify()
}

// Logf appends a line to the job's log (level: info, warn, error).
func (r *Run) Logf(level, format string, a ...any) {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	r.job.LogLines++
	line := wire.JobLogLine{N: r.job.LogLines, Time: r.s.opts.Now().UTC(), Level: level, Msg: fmt.Sprintf(format, a...)}
	if line.N > r.s.opts.MaxLogLines {
		r.mu.Unlock()
		return
	}
	if line.N == r.s.opts.MaxLogLines {
		line.Msg = "(log truncated: later lines are not kept) " + line.Msg
	}
	j := r.job
	r.mu.Unlock()
	r.save(j, &line)
}

// Finish ends the job: succeeded without err, canceled when Cancel asked
// for it and err wraps context.Canceled, else failed. summary (any JSON
// value, or nil) is kept with it.
func (r *Run) Finish(summary any, err error) {
	r.mu.Lock()
	canceled := r.canceled
	r.mu.Unlock()
	state := wire.JobSucceeded
	switch {
	case err != nil && canceled && errors.Is(err, context.Canceled):
		state = wire.JobCanceled
	case err != nil:
		state = wire.JobFailed
	}
	r.end(state, summary, err)
}

// Interrupt ends the job as interrupted: the host is stopping under it.
func (r *Run) Interrupt(err error) { r.end(wire.JobInterrupted, nil, err) }

func (r *Run) end(state string, summary any, err error) {
	now := r.s.opts.Now()
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	r.ended = true
	r.closeStage(now)
	r.job.Progress.Stage, r.job.Progress.Rate, r.job.Progress.ETASeconds = "", 0, 0
	utc := now.UTC()
	r.job.State, r.job.Ended = state, &utc
	if err != nil {
		r.job.Error = err.Error()
	}
	if summary != nil {
		if b, merr := json.Marshal(summary); merr == nil {
			r.job.Summary = b
		}
	}
	j := r.job
	r.mu.Unlock()
	r.save(j, nil)
	r.s.mu.Lock()
	delete(r.s.active, j.ID)
	hooks := r.s.onEnd
	r.s.mu.Unlock()
	for _, f := range hooks {
		f(j)
	}
	r.s.notify()
}

// save writes the job record (and a log line). A write that fails (the
// datastore full) is dropped: the history must not stop the job it
// records, and the next save writes the whole record again.
func (r *Run) save(j wire.Job, line *wire.JobLogLine) {
	_ = r.s.db.Update(func(tx *bolt.Tx) error {
		if err := putJob(appending(tx, bucketJobs), r.key, j); err != nil {
			return err
		}
		if line != nil {
			lb, err := appending(tx, bucketLogs).CreateBucketIfNotExists(r.key)
			if err != nil {
				return err
			}
			lb.FillPercent = appendFill // line numbers increase too
			v, err := json.Marshal(line)
			if err != nil {
				return err
			}
			if err := lb.Put(binary.BigEndian.AppendUint32(nil, uint32(line.N)), v); err != nil {
				return err
			}
		}
		if j.Done() {
			return r.s.retain(tx)
		}
		return nil
	})
	r.s.notify()
}

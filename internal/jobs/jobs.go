package jobs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	wire "github.com/blockwise/blockwise/api"
)

// Errors of the store.
var (
	// ErrNotFound: no job of that ID (never run, or past retention).
	ErrNotFound = errors.New("job not found")
	// ErrEnded: the job has already ended (cancel).
	ErrEnded = errors.New("job already ended")
)

// Defaults of Options.
const (
	DefaultMaxJobs     = 200000 // 1,000 disks × 100 points with room for retries
	DefaultMaxAge      = 90 * 24 * time.Hour
	DefaultMaxLogLines = 5000
	DefaultCompactMin  = 16 << 20
)

var (
	bucketJobs = []byte("jobs")
	bucketLogs = []byte("logs")
	// bucketSource indexes the jobs by source: SOURCE 0x00 KEY → "".
	bucketSource = []byte("by-source")
)

// Options configure a Store; zero values take the defaults.
type Options struct {
	MaxJobs     int           // ended jobs kept
	MaxAge      time.Duration // ended jobs older than this are dropped
	MaxLogLines int           // per job; later lines are counted, not kept
	Now         func() time.Time
	// NoSync skips fsync: only for generating benchmark histories.
	NoSync bool
	// CompactMin: a file this large or larger may be compacted when
	// opened (docs/jobs.md invariant 10); default 16 MiB.
	CompactMin int64
}

// Store is the job history. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	mu      sync.Mutex
	active  map[string]*Run
	changed chan struct{} // closed and replaced on every change
	onEnd   []func(wire.Job)
	count   int // records in the database (retention counts them here, not by a scan)
}

// OnEnd registers f to be called with every job that ends from now on
// (in the ending goroutine: f must be quick and must not call back into
// the Store's Run methods).
func (s *Store) OnEnd(f func(wire.Job)) {
	s.mu.Lock()
	s.onEnd = append(s.onEnd, f)
	s.mu.Unlock()
}

// Open opens (creating) the history at path and marks every job a dead
// host left queued or running as interrupted.
func Open(path string, o Options) (*Store, error) {
	if o.MaxJobs <= 0 {
		o.MaxJobs = DefaultMaxJobs
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxLogLines <= 0 {
		o.MaxLogLines = DefaultMaxLogLines
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	bo := &bolt.Options{Timeout: 2 * time.Second, NoSync: o.NoSync}
	if o.CompactMin <= 0 {
		o.CompactMin = DefaultCompactMin
	}
	if err := compactIfSparse(path, bo, o.CompactMin); err != nil {
		return nil, fmt.Errorf("jobs: compact %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, bo)
	if err != nil {
		return nil, fmt.Errorf("jobs: open %s: %w", path, err)
	}
	s := &Store{db: db, opts: o, active: map[string]*Run{}, changed: make(chan struct{})}
	if err := s.recover(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database. Runs still active are marked interrupted
// first (the host is stopping under them).
func (s *Store) Close() error {
	s.mu.Lock()
	runs := make([]*Run, 0, len(s.active))
	for _, r := range s.active {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	for _, r := range runs {
		r.end(wire.JobInterrupted, nil, errors.New("the host stopped while the job ran"))
	}
	return s.db.Close()
}

// recover ends the jobs a dead host left unended (docs/jobs.md
// invariant 2).
func (s *Store) recover() error {
	now := s.opts.Now().UTC()
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketJobs)
		if err != nil {
			return err
		}
		b.FillPercent = appendFill
		if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
			return err
		}
		if err := s.indexSources(tx); err != nil {
			return err
		}
		s.count = b.Stats().KeyN
		unended := [][]byte{[]byte(`"state":"` + wire.JobRunning + `"`), []byte(`"state":"` + wire.JobQueued + `"`)}
		fix := map[string]wire.Job{}
		err = b.ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, unended[0]) && !bytes.Contains(v, unended[1]) {
				return nil // ended: not worth decoding
			}
			var j wire.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("jobs: record %x: %w", k, err)
			}
			if !j.Done() {
				j.State, j.Ended = wire.JobInterrupted, &now
				j.Error = "the host stopped while the job ran (crash, kill or power loss)"
				fix[string(k)] = j
			}
			return nil
		})
		for k, j := range fix { // after the iteration: bbolt forbids writes during ForEach
			if err == nil {
				err = putJob(b, []byte(k), j)
			}
		}
		return err
	})
}

// indexSources creates the by-source index, filling it from the jobs
// when it is new (a history from before it).
func (s *Store) indexSources(tx *bolt.Tx) error {
	if tx.Bucket(bucketSource) != nil {
		return nil
	}
	ix, err := tx.CreateBucket(bucketSource)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
		var j wire.Job
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		return putSource(ix, j.Source, k)
	})
}

// sourceKey is a job's key in the by-source index.
func sourceKey(source string, k []byte) []byte {
	return append(append([]byte(source), 0), k...)
}

func putSource(ix *bolt.Bucket, source string, k []byte) error {
	if source == "" {
		return nil
	}
	return ix.Put(sourceKey(source, k), nil)
}

// appendFill is how full the jobs' and logs' pages are split: their
// keys are increasing sequence numbers, so nearly every insert appends,
// and bbolt's default (half) left every page half empty, doubling the
// file and what a scan of the history maps in (docs/jobs.md
// invariant 9).
const appendFill = 0.95

// appending returns a bucket keyed by sequence numbers, set to fill its
// pages (bbolt's FillPercent lasts one transaction).
func appending(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = appendFill
	return b
}

// key orders jobs by creation: the big-endian sequence number.
func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// parseID turns "job-N" into its key.
func parseID(id string) ([]byte, bool) {
	n, err := strconv.ParseUint(strings.TrimPrefix(id, "job-"), 10, 64)
	if err != nil || !strings.HasPrefix(id, "job-") || n == 0 {
		return nil, false
	}
	return key(n), true
}

func putJob(b *bolt.Bucket, k []byte, j wire.Job) error {
	v, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// Spec names a new job.
type Spec struct {
	Kind, Policy, Source string
	Attempt              int
	// Queued begins the job queued (waiting for a slot); Run.Start
	// makes it running.
	Queued bool
	// Cancel, if set, is called by Store.Cancel; the runner then ends the
	// job with an error wrapping context.Canceled.
	Cancel context.CancelFunc
}

// Begin records a new running (or queued) job and returns its handle; the caller
// MUST end it (Finish).
func (s *Store) Begin(sp Spec) (*Run, error) {
	now := s.opts.Now().UTC()
	r := &Run{s: s, cancel: sp.Cancel, stageStart: now}
	r.job = wire.Job{Kind: sp.Kind, Policy: sp.Policy, Source: sp.Source, State: wire.JobRunning,
		Attempt: max(sp.Attempt, 1), Created: now, Started: &now}
	if sp.Queued {
		r.job.State, r.job.Started = wire.JobQueued, nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := appending(tx, bucketJobs)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		r.key = key(seq)
		r.job.ID = "job-" + strconv.FormatUint(seq, 10)
		if err := putSource(tx.Bucket(bucketSource), sp.Source, r.key); err != nil {
			return err
		}
		return putJob(b, r.key, r.job)
	})
	if err == nil {
		s.mu.Lock()
		s.count++
		s.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: begin %s: %w", sp.Kind, err)
	}
	s.mu.Lock()
	s.active[r.job.ID] = r
	s.mu.Unlock()
	s.notify()
	return r, nil
}

// notify wakes every Wait.
func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Changed returns a channel closed at the next change of any job (a new
// job, progress, a log line, an end).
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Get returns a job: the live view of a running one.
func (s *Store) Get(id string) (wire.Job, error) {
	s.mu.Lock()
	r := s.active[id]
	s.mu.Unlock()
	if r != nil {
		return r.View(), nil
	}
	k, ok := parseID(id)
	if !ok {
		return wire.Job{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	var j wire.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get(k)
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return json.Unmarshal(v, &j)
	})
	return j, err
}

// Filter selects jobs in List; zero fields match all.
type Filter struct {
	State, Kind, Policy, Source string
	// Since keeps jobs created at or after it.
	Since time.Time
	Limit int // newest first; 0: all
}

func (f Filter) match(j wire.Job) bool {
	return (f.State == "" || f.State == j.State) && (f.Kind == "" || f.Kind == j.Kind) &&
		(f.Policy == "" || f.Policy == j.Policy) && (f.Source == "" || f.Source == j.Source) &&
		(f.Since.IsZero() || !j.Created.Before(f.Since))
}

// listSource is List of one source's jobs, through the by-source index.
func (s *Store) listSource(f Filter) ([]wire.Job, error) {
	var out []wire.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		jb := tx.Bucket(bucketJobs)
		c := tx.Bucket(bucketSource).Cursor()
		prefix := sourceKey(f.Source, nil)
		k, _ := c.Seek(sourceKey(f.Source, key(^uint64(0))))
		if k == nil {
			k, _ = c.Last()
		}
		for ; k != nil; k, _ = c.Prev() {
			if !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
				if bytes.Compare(k, prefix) < 0 {
					break
				}
				continue
			}
			v := jb.Get(k[len(prefix):])
			if v == nil {
				continue
			}
			var j wire.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if !f.Since.IsZero() && j.Created.Before(f.Since) {
				break
			}
			if f.match(j) {
				out = append(out, j)
			}
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	s.mu.Lock()
	for i, j := range out {
		if r := s.active[j.ID]; r != nil {
			out[i] = r.View()
		}
	}
	s.mu.Unlock()
	return out, err
}

// needle is a byte string every record f can match contains (records
// are json.Marshal's encoding of wire.Job, whose fields it writes the
// same way each time), or nil: a cheap first filter over a large history.
func (f Filter) needle() []byte {
	field, v := "source", f.Source
	if v == "" {
		field, v = "policy", f.Policy
	}
	if v == "" {
		return nil
	}
	b, _ := json.Marshal(v)
	return append([]byte(`"`+field+`":`), b...)
}

// List returns the jobs f selects, newest first, running ones live.
func (s *Store) List(f Filter) ([]wire.Job, error) {
	if f.Source != "" {
		return s.listSource(f)
	}
	var out []wire.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		needle := f.needle()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if needle != nil && !bytes.Contains(v, needle) {
				continue // cannot match: skip decoding it
			}
			var j wire.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if !j.Created.IsZero() && !f.Since.IsZero() && j.Created.Before(f.Since) {
				break // older from here on
			}
			if f.match(j) {
				out = append(out, j)
			}
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
		return nil
	})
	s.mu.Lock()
	for i, j := range out {
		if r := s.active[j.ID]; r != nil {
			out[i] = r.View()
		}
	}
	s.mu.Unlock()
	return out, err
}

// Each calls fn with every recorded job f selects, oldest first, one at
// a time (a large history is never all in memory); f.Limit is ignored.
// Running jobs are passed as last recorded. fn must not call the Store.
func (s *Store) Each(f Filter, fn func(wire.Job) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		needle := f.needle()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if needle != nil && !bytes.Contains(v, needle) {
				continue
			}
			var j wire.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			if f.match(j) {
				if err := fn(j); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Cancel asks a running job to stop; it ends as canceled once its runner
// returns.
func (s *Store) Cancel(id string) (wire.Job, error) {
	s.mu.Lock()
	r := s.active[id]
	s.mu.Unlock()
	if r == nil {
		j, err := s.Get(id)
		if err != nil {
			return j, err
		}
		return j, fmt.Errorf("%w: %s is %s", ErrEnded, id, j.State)
	}
	r.mu.Lock()
	r.canceled = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.Logf("info", "cancel requested")
	return r.View(), nil
}

// Log returns the log lines of a job after line number after.
func (s *Store) Log(id string, after int) ([]wire.JobLogLine, error) {
	k, ok := parseID(id)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	out := []wire.JobLogLine{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJobs).Get(k) == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		lb := tx.Bucket(bucketLogs).Bucket(k)
		if lb == nil {
			return nil
		}
		c := lb.Cursor()
		for lk, v := c.Seek(binary.BigEndian.AppendUint32(nil, uint32(after+1))); lk != nil; lk, v = c.Next() {
			var l wire.JobLogLine
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			out = append(out, l)
		}
		return nil
	})
	return out, err
}

// Active returns the jobs queued or running now, oldest first, from
// memory.
func (s *Store) Active() []wire.Job {
	s.mu.Lock()
	runs := make([]*Run, 0, len(s.active))
	for _, r := range s.active {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	out := make([]wire.Job, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.View())
	}
	sort.Slice(out, func(i, j int) bool { return string(parseKey(out[i].ID)) < string(parseKey(out[j].ID)) })
	return out
}

func parseKey(id string) []byte { k, _ := parseID(id); return k }

// Running is the number of jobs running now.
func (s *Store) Running() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, r := range s.active {
		out[r.job.Kind]++
	}
	return out
}

// retain drops ended jobs, oldest first, while more than MaxJobs are
// kept or they are older than MaxAge; running jobs are never dropped.
func (s *Store) retain(tx *bolt.Tx) error {
	b, logs := appending(tx, bucketJobs), appending(tx, bucketLogs)
	cutoff := s.opts.Now().Add(-s.opts.MaxAge)
	s.mu.Lock()
	excess := s.count - s.opts.MaxJobs
	s.mu.Unlock()
	var drop [][]byte
	var sources []string
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var j wire.Job
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		old := j.Ended != nil && j.Ended.Before(cutoff)
		if excess <= 0 && !old {
			break
		}
		if j.Done() {
			drop = append(drop, append([]byte(nil), k...))
			sources = append(sources, j.Source)
			excess--
		}
	}
	for i, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
		if sources[i] != "" {
			if err := tx.Bucket(bucketSource).Delete(sourceKey(sources[i], k)); err != nil {
				return err
			}
		}
		s.mu.Lock()
		s.count--
		s.mu.Unlock()
		if logs.Bucket(k) != nil {
			if err := logs.DeleteBucket(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Import records ended jobs as they are given (their IDs are assigned in
// order), many per transaction: for tools that build or migrate a
// history (bench/consolegen). It returns the IDs.
func (s *Store) Import(js []wire.Job) ([]string, error) {
	ids := make([]string, 0, len(js))
	for len(js) > 0 {
		n := min(len(js), 5000)
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := appending(tx, bucketJobs)
			for _, j := range js[:n] {
				if !j.Done() {
					return fmt.Errorf("jobs: import: %s is %s, not ended", j.Kind, j.State)
				}
				seq, err := b.NextSequence()
				if err != nil {
					return err
				}
				j.ID = "job-" + strconv.FormatUint(seq, 10)
				if err := putJob(b, key(seq), j); err != nil {
					return err
				}
				if err := putSource(tx.Bucket(bucketSource), j.Source, key(seq)); err != nil {
					return err
				}
				ids = append(ids, j.ID)
			}
			return nil
		})
		if err != nil {
			return ids, err
		}
		s.mu.Lock()
		s.count += n
		s.mu.Unlock()
		js = js[n:]
	}
	s.notify()
	return ids, nil
}

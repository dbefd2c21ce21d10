package console

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/jobs"
)

// Point is one backup job of a source, as the console shows it.
type Point struct {
	Job     string    `json:"job"`
	Policy  string    `json:"policy"`
	State   string    `json:"state"`
	Time    time.Time `json:"time"`
	Seconds float64   `json:"seconds"`
	Point   string    `json:"point,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	Size    uint64    `json:"size"`
	Changed int64     `json:"changed"`
	Read    int64     `json:"read"`
	New     uint64    `json:"new"`
	Stored  uint64    `json:"stored"`
	Error   string    `json:"error,omitempty"`
	// Consistency: "application" (quiesced), "crash", or empty (a host
	// disk backed up without quiescing).
	Consistency string `json:"consistency,omitempty"`
	// Bottleneck is the backup's longest phase ("copy", "snapshot",
	// "commit"...) and Share its part of the phases' time: where to
	// look when a run is slow.
	Bottleneck string  `json:"bottleneck,omitempty"`
	Share      float32 `json:"share,omitempty"`
}

// index holds every source's backup jobs, oldest first.
type index struct {
	mu      sync.RWMutex
	by      map[string][]Point
	version uint64 // bumped on every job's end
	// words interns the few distinct modes, phases and consistencies,
	// so 100,000 points do not each hold copies.
	words map[string]string
}

// intern returns the index's copy of w (x.mu held).
func (x *index) intern(w string) string {
	if w == "" {
		return ""
	}
	if x.words == nil {
		x.words = map[string]string{}
	}
	if c, ok := x.words[w]; ok {
		return c
	}
	x.words[w] = w
	return w
}

// summary is the part of backup.Summary the console reads.
type summary struct {
	ID      string  `json:"id"`
	Mode    string  `json:"mode"`
	Size    uint64  `json:"size"`
	Changed int64   `json:"changedBytes"`
	Read    int64   `json:"readBytes"`
	New     uint64  `json:"newBytes"`
	Stored  uint64  `json:"storedBytes"`
	Seconds float64 `json:"seconds"`

	Consistency string             `json:"consistency"`
	Phases      map[string]float64 `json:"phases"`
}

// bottleneck is the longest of phases and its share of their sum.
func bottleneck(phases map[string]float64) (string, float32) {
	name, longest, sum := "", 0.0, 0.0
	for k, v := range phases {
		sum += v
		if v > longest || (v == longest && k < name) {
			name, longest = k, v
		}
	}
	if sum <= 0 {
		return "", 0
	}
	return name, float32(longest / sum)
}

func pointOf(j wire.Job) (Point, bool) {
	if j.Kind != wire.JobBackup || j.Source == "" || !j.Done() {
		return Point{}, false
	}
	p := Point{Job: j.ID, Policy: j.Policy, State: j.State, Time: j.Created, Error: j.Error}
	if j.Started != nil && j.Ended != nil {
		p.Seconds = j.Ended.Sub(*j.Started).Seconds()
	}
	var s summary
	if len(j.Summary) > 0 && json.Unmarshal(j.Summary, &s) == nil {
		p.Point, p.Mode, p.Size, p.Changed, p.Read, p.New, p.Stored = s.ID, s.Mode, s.Size, s.Changed, s.Read, s.New, s.Stored
		p.Consistency = s.Consistency
		p.Bottleneck, p.Share = bottleneck(s.Phases)
	}
	return p, true
}

// newIndex reads the history's backup jobs and follows new ends.
func newIndex(st *jobs.Store) *index {
	x := &index{by: map[string][]Point{}}
	if st == nil {
		return x
	}
	st.OnEnd(func(j wire.Job) { x.add(j) })
	st.Each(jobs.Filter{Kind: wire.JobBackup}, func(j wire.Job) error {
		x.add(j)
		return nil
	})
	return x
}

func (x *index) add(j wire.Job) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.version++ // any end: pages showing jobs reload
	p, ok := pointOf(j)
	if !ok {
		return
	}
	p.Mode, p.Bottleneck, p.Consistency, p.Policy = x.intern(p.Mode), x.intern(p.Bottleneck), x.intern(p.Consistency), x.intern(p.Policy)
	p.State = x.intern(p.State)
	ps := x.by[j.Source]
	for i := range ps { // seen already (a job that ended while the index was built)
		if ps[i].Job == p.Job {
			return
		}
	}
	ps = append(ps, p)
	if n := len(ps); n > 1 && ps[n-1].Time.Before(ps[n-2].Time) {
		sort.Slice(ps, func(a, b int) bool { return ps[a].Time.Before(ps[b].Time) })
	}
	x.by[j.Source] = ps
}

// points returns a copy of a source's points, oldest first.
func (x *index) points(src string) []Point {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return append([]Point(nil), x.by[src]...)
}

// eachSince calls fn with each of src's points taken at or after since,
// oldest first, under the index's read lock (fn must not call the
// index). The points are in time order: older ones are not visited.
func (x *index) eachSince(src string, since time.Time, fn func(*Point)) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ps := x.by[src]
	for i := sort.Search(len(ps), func(i int) bool { return !ps[i].Time.Before(since) }); i < len(ps); i++ {
		fn(&ps[i])
	}
}

func (x *index) ver() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.version
}

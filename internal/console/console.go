package console

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
	"github.com/blockwise/blockwise/internal/labels"
)

//go:embed assets
var assets embed.FS

// Policies is what the console reads of the host's scheduler.
type Policies interface {
	List(ctx context.Context) ([]wire.Policy, error)
}

// Options configure a Console.
type Options struct {
	Host      *host.Host
	Jobs      *jobs.Store // nil: no history, no points
	Datastore string
	Logger    *slog.Logger
}

// Console serves the web console's pages and their data.
type Console struct {
	o        Options
	idx      *index
	policies atomic.Pointer[Policies]
	repl     atomic.Pointer[Replication]
	mux      *http.ServeMux
	login    *template.Template
}

// New builds the console; it reads the job history's backups once.
func New(o Options) *Console {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{o: o, idx: newIndex(o.Jobs), mux: http.NewServeMux()}
	c.login = template.Must(template.ParseFS(assets, "assets/login.html"))
	static, _ := fs.Sub(assets, "assets")
	c.mux.Handle("GET /{$}", c.page("index.html"))
	c.mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /console/api/overview", c.data(c.overview))
	c.mux.HandleFunc("GET /console/api/grid", c.data(c.grid))
	c.mux.HandleFunc("GET /console/api/sources/{name}", c.data(c.source))
	c.mux.HandleFunc("GET /console/api/replication", c.data(c.replication))
	c.mux.HandleFunc("GET /console/api/disks", c.data(c.diskNames))
	c.mux.HandleFunc("GET /console/events", c.events)
	return c
}

// SetPolicies gives the console the host's policies.
func (c *Console) SetPolicies(p Policies) { c.policies.Store(&p) }

func (c *Console) policyList(ctx context.Context) []wire.Policy {
	p := c.policies.Load()
	if p == nil {
		return nil
	}
	list, err := (*p).List(ctx)
	if err != nil {
		c.o.Logger.Warn("console: policies", "err", err)
	}
	return list
}

// secure sets the headers every console answer carries: scripts and
// styles only from the console itself, no framing, no sniffing.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secure(w.Header())
	c.mux.ServeHTTP(w, r)
}

func (c *Console) page(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
}

// Login writes the login page with msg (escaped by html/template).
func (c *Console) Login(w http.ResponseWriter, r *http.Request, msg string) {
	secure(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	c.login.Execute(w, map[string]string{"Message": msg})
}

// data answers with fn's value as JSON.
func (c *Console) data(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(wire.Problem{Type: wire.ProblemInternal, Title: "internal error", Status: 500, Detail: err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

// SourceRow is a disk on the overview, or (Kind "vm") a policy's
// hypervisor source, named by its URI.
type SourceRow struct {
	Disk          string     `json:"disk"`
	Kind          string     `json:"kind,omitempty"`
	Labels        string     `json:"labels,omitempty"` // "k=v,k2=v2", what label selectors see
	Size          int64      `json:"size"`
	Allocated     int64      `json:"allocated"`
	Policies      []string   `json:"policies"`
	LastSuccess   *time.Time `json:"lastSuccess,omitempty"`
	LastState     string     `json:"lastState,omitempty"`
	LastJob       string     `json:"lastJob,omitempty"`
	FailuresSince int        `json:"failuresSince"`
	Stale         bool       `json:"stale"`
}

// Overview is the overview page's data.
type Overview struct {
	Disks       int             `json:"disks"`
	Protected   int             `json:"protected"`
	Unprotected int             `json:"unprotected"`
	Failing     int             `json:"failing"`
	StaleCount  int             `json:"stale"`
	Running     int             `json:"running"`
	Sources     []SourceRow     `json:"sources"` // failing, then stale, then unprotected, then the rest
	Datastore   DatastoreSpace  `json:"datastore"`
	Repos       []RepoRow       `json:"repositories"`
	Policies    []PolicySummary `json:"policies"`
}

// DatastoreSpace is the datastore's file system and what the disks ask
// of it: Provisioned is the disks' sizes, Overcommit Provisioned/Size.
type DatastoreSpace struct {
	Size        int64   `json:"size"`
	Free        int64   `json:"free"`
	Provisioned int64   `json:"provisioned"`
	Allocated   int64   `json:"allocated"`
	Overcommit  float64 `json:"overcommit"`
}

// RepoRow is a policy's repository's size.
type RepoRow struct {
	Policy   string         `json:"policy"`
	Location string         `json:"location"`
	Size     *wire.RepoSize `json:"size,omitempty"`
}

// PolicySummary is a policy on the overview.
type PolicySummary struct {
	Name     string     `json:"name"`
	Schedule string     `json:"schedule"`
	NextRun  *time.Time `json:"nextRun,omitempty"`
	Sources  int        `json:"sources"`
	Paused   bool       `json:"paused"`
	KeyReady bool       `json:"keyReady"`
	KeyError string     `json:"keyError,omitempty"`
}

func (c *Console) overview(r *http.Request) (any, error) {
	names, err := c.o.Host.Datastore().List()
	if err != nil {
		return nil, err
	}
	ov := &Overview{Disks: len(names), Sources: make([]SourceRow, 0, len(names)), Repos: []RepoRow{}, Policies: []PolicySummary{}}
	rows := map[string]*SourceRow{}
	var all map[string]map[string]string
	if ls, err := c.o.Host.Labels(); err == nil {
		all = ls.All()
	}
	for _, n := range names {
		row := SourceRow{Disk: n, Labels: labels.String(all[n]), Policies: []string{}}
		if d, err := c.o.Host.Disk(n); err == nil {
			if st, err := d.Stat(); err == nil {
				row.Size, row.Allocated = st.Size, st.Allocated
			}
		}
		ov.Datastore.Provisioned += row.Size
		ov.Datastore.Allocated += row.Allocated
		ov.Sources = append(ov.Sources, row)
	}
	policies := c.policyList(r.Context())
	for _, u := range vmSources(policies) {
		ov.Sources = append(ov.Sources, SourceRow{Disk: u, Kind: wire.SourceKindVM, Policies: []string{}})
	}
	for i := range ov.Sources {
		rows[ov.Sources[i].Disk] = &ov.Sources[i]
	}
	c.addPolicies(policies, ov, rows)
	for i := range ov.Sources {
		s := &ov.Sources[i]
		if len(s.Policies) > 0 && s.Kind == "" {
			ov.Protected++
		}
		if s.FailuresSince > 0 {
			ov.Failing++
		}
		if s.Stale {
			ov.StaleCount++
		}
	}
	ov.Unprotected = ov.Disks - ov.Protected
	sort.SliceStable(ov.Sources, func(i, j int) bool { return rank(ov.Sources[i]) < rank(ov.Sources[j]) })
	var fs unix.Statfs_t
	if c.o.Datastore != "" && unix.Statfs(c.o.Datastore, &fs) == nil {
		ov.Datastore.Size, ov.Datastore.Free = int64(fs.Blocks)*fs.Bsize, int64(fs.Bavail)*fs.Bsize
		if ov.Datastore.Size > 0 {
			ov.Datastore.Overcommit = float64(ov.Datastore.Provisioned) / float64(ov.Datastore.Size)
		}
	}
	if c.o.Jobs != nil {
		ov.Running = len(c.o.Jobs.Active())
	}
	return ov, nil
}

// diskNames lists the datastore's disks by name only (the clone page's
// choice): /v1/disks describes each, 350 KB for 1,000 disks.
func (c *Console) diskNames(*http.Request) (any, error) {
	names, err := c.o.Host.Datastore().List()
	if names == nil {
		names = []string{}
	}
	return names, err
}

// rank orders the overview: failing, stale, unprotected, the rest.
func rank(s SourceRow) int {
	switch {
	case s.FailuresSince > 0:
		return 0
	case s.Stale:
		return 1
	case len(s.Policies) == 0:
		return 2
	}
	return 3
}

// vmSources are the hypervisor sources of the policies, sorted: the
// grid's and overview's rows beside the datastore's disks.
func vmSources(policies []wire.Policy) []string {
	seen := map[string]bool{}
	for _, p := range policies {
		if p.Status == nil {
			continue
		}
		for _, s := range p.Status.Sources {
			if s.Kind == wire.SourceKindVM {
				seen[s.Disk] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// addPolicies marks each source with its policies and status.
func (c *Console) addPolicies(policies []wire.Policy, ov *Overview, rows map[string]*SourceRow) {
	for _, p := range policies {
		ps := PolicySummary{Name: p.Name, Schedule: p.Schedule, Paused: p.Paused}
		ov.Repos = append(ov.Repos, RepoRow{Policy: p.Name, Location: p.Repository.Location})
		if st := p.Status; st != nil {
			ps.NextRun, ps.Sources, ps.KeyReady, ps.KeyError = st.NextRun, len(st.Sources), st.KeyReady, st.KeyError
			ov.Repos[len(ov.Repos)-1].Size = st.Repository
			for _, src := range st.Sources {
				row := rows[src.Disk]
				if row == nil {
					continue
				}
				row.Policies = append(row.Policies, p.Name)
				row.FailuresSince += src.FailuresSince
				row.Stale = row.Stale || src.Stale
				if src.LastSuccess != nil && (row.LastSuccess == nil || src.LastSuccess.After(*row.LastSuccess)) {
					row.LastSuccess = src.LastSuccess
				}
				if src.LastJob != "" && (row.LastJob == "" || jobNum(src.LastJob) > jobNum(row.LastJob)) {
					row.LastJob, row.LastState = src.LastJob, src.LastState
				}
			}
		}
		ov.Policies = append(ov.Policies, ps)
	}
}

func jobNum(id string) uint64 {
	n, _ := strconv.ParseUint(id[min(len(id), 4):], 10, 64)
	return n
}

// Grid is the per-source × day grid: Days oldest first (UTC dates).
type Grid struct {
	Days []string  `json:"days"`
	Rows []GridRow `json:"rows"`
}

// GridRow is a source's days. Each cell is "" when nothing ran, else
// the state's letter (s succeeded, f failed, i interrupted, c canceled)
// of the day's last backup, its job number, and "xN" when N ran: short
// strings keep 1,000 × 30 cells small and fast to encode.
type GridRow struct {
	Source string   `json:"source"`
	Cells  []string `json:"cells"`
}

var stateLetter = map[string]string{wire.JobSucceeded: "s", wire.JobFailed: "f", wire.JobInterrupted: "i", wire.JobCanceled: "c"}

func (c *Console) grid(r *http.Request) (any, error) {
	days := 30
	if v, err := strconv.Atoi(r.URL.Query().Get("days")); err == nil && v > 0 && v <= 366 {
		days = v
	}
	names, err := c.o.Host.Datastore().List()
	if err != nil {
		return nil, err
	}
	names = append(names, vmSources(c.policyList(r.Context()))...)
	return c.gridFor(names, days, time.Now()), nil
}

// gridFor is the grid of the named sources' last days up to now.
func (c *Console) gridFor(names []string, days int, now time.Time) *Grid {
	today := now.UTC().Truncate(24 * time.Hour)
	first := today.AddDate(0, 0, -(days - 1))
	g := &Grid{Rows: make([]GridRow, 0, len(names))}
	for i := range days {
		g.Days = append(g.Days, first.AddDate(0, 0, i).Format(time.DateOnly))
	}
	for _, n := range names {
		row := GridRow{Source: n, Cells: make([]string, days)}
		last, states := make([]string, days), make([]string, days)
		runs := make([]int, days)
		c.idx.eachSince(n, first, func(p *Point) {
			d := int(p.Time.Sub(first) / (24 * time.Hour))
			if d >= days {
				return
			}
			runs[d]++
			last[d] = p.Job // oldest first: the last one wins
			states[d] = p.State
		})
		for d, job := range last {
			if job == "" {
				continue
			}
			cell := stateLetter[states[d]] + strings.TrimPrefix(job, "job-")
			if runs[d] > 1 {
				cell += "x" + strconv.Itoa(runs[d])
			}
			row.Cells[d] = cell
		}
		g.Rows = append(g.Rows, row)
	}
	return g
}

// SourcePage is a source's page: its points, oldest first.
type SourcePage struct {
	Disk     string   `json:"disk"`
	Size     int64    `json:"size"`
	Policies []string `json:"policies"`
	Points   []Point  `json:"points"`
}

func (c *Console) source(r *http.Request) (any, error) {
	name := r.PathValue("name")
	sp := &SourcePage{Disk: name, Policies: []string{}, Points: c.idx.points(name)}
	if sp.Points == nil {
		sp.Points = []Point{}
	}
	if d, err := c.o.Host.Disk(name); err == nil {
		if st, err := d.Stat(); err == nil {
			sp.Size = st.Size
		}
	}
	for _, p := range c.policyList(r.Context()) {
		if p.Status == nil {
			continue
		}
		for _, s := range p.Status.Sources {
			if s.Disk == name {
				sp.Policies = append(sp.Policies, p.Name)
			}
		}
	}
	return sp, nil
}

// events streams server-sent events: "jobs" with the active jobs after
// every change (at most four a second), and the index's version, which
// the page watches to reload its data when a job has ended; and
// "replication" with a digest of the replication groups' state, checked
// every second, when it changes (the replication page redraws).
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok || c.o.Jobs == nil {
		http.Error(w, "no event stream", http.StatusNotImplemented)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(15 * time.Second) // keeps proxies from closing an idle stream
	defer tick.Stop()
	repl := time.NewTicker(time.Second)
	defer repl.Stop()
	digest := "-"
	send := func(event string, v any) bool {
		b, _ := json.Marshal(v)
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		fl.Flush()
		return err == nil
	}
	for {
		ch := c.o.Jobs.Changed()
		if !send("jobs", map[string]any{"active": c.o.Jobs.Active(), "version": c.idx.ver()}) {
			return
		}
		for waiting := true; waiting; {
			if d := c.replicationDigest(); d != digest {
				if digest = d; !send("replication", map[string]string{"digest": d}) {
					return
				}
			}
			select {
			case <-r.Context().Done():
				return
			case <-ch:
				waiting = false
			case <-tick.C:
				waiting = false
			case <-repl.C:
			}
		}
		select { // coalesce a burst of progress reports
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

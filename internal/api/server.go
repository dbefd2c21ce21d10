package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/console"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

// maxBody bounds request bodies: every request document is tiny.
const maxBody = 1 << 20

// Options configure a Server.
type Options struct {
	Logger  *slog.Logger // nil discards
	Exports ExportConfig
	// Tokens authenticate TCP requests; nil refuses every TCP request.
	Tokens *Tokens
	// Tickets issues NBD tickets (POST .../tickets); nil issues none.
	Tickets *Tickets
	// Points serves the files of restore points (GET /v1/points...);
	// nil serves none.
	Points Points
	// Jobs is the host's job history (/v1/jobs); nil keeps none.
	Jobs *jobs.Store
	// ConsoleURLs are the bases (https://HOST:PORT) of the TCP listeners,
	// for the console's one-time login links.
	ConsoleURLs []string
	// Datastore is the datastore's directory (the console shows its
	// capacity); "" shows none.
	Datastore string
}

// Server is the HTTP control API of one host.
type Server struct {
	h           *host.Host
	log         *slog.Logger
	exports     ExportConfig
	tokens      *Tokens
	tickets     *Tickets
	points      Points
	tasks       *tasks
	jobs        *jobs.Store
	policies    policiesHolder
	recoveries  recoveriesHolder
	sessions    sessions
	console     *console.Console
	consoleURLs []string
	reg         *prometheus.Registry
	mux         *http.ServeMux
	routes      []string
	attach      attachments

	srv      *http.Server
	stop     context.CancelFunc
	stopOnce sync.Once
	ctx      context.Context
}

// handler answers a request with a status and a JSON body, or an error
// that becomes a problem document.
type handler func(r *http.Request) (int, any, error)

// New returns the API of h. It serves nothing until Serve.
func New(h *host.Host, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, log: o.Logger, exports: o.Exports, tokens: o.Tokens, tickets: o.Tickets, points: o.Points, jobs: o.Jobs, consoleURLs: o.ConsoleURLs, mux: http.NewServeMux()}
	s.console = console.New(console.Options{Host: h, Jobs: o.Jobs, Datastore: o.Datastore, Logger: o.Logger})
	s.reg = prometheus.NewRegistry()
	s.tasks = newTasks(s.reg, o.Jobs)
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.attach.m = map[string]*attachment{}
	s.registerMetrics()
	s.registerRoutes()
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second, // slow clients cannot pin a goroutine forever
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       markTrusted,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

func (s *Server) registerRoutes() {
	s.route("GET /v1/disks", s.listDisks)
	s.route("POST /v1/disks", s.createDisk)
	s.route("GET /v1/disks/{disk}", s.getDisk)
	s.route("DELETE /v1/disks/{disk}", s.deleteDisk)
	s.route("PATCH /v1/disks/{disk}", s.updateDisk)
	s.route("POST /v1/disks/{disk}/grow", s.growDisk)
	s.route("PUT /v1/disks/{disk}/labels", s.putLabels)
	s.route("PATCH /v1/disks/{disk}/labels", s.patchLabels)
	s.route("POST /v1/disks/{disk}/clone", s.cloneDisk)
	s.route("POST /v1/disks/{disk}/copy", s.copyExtent)
	s.route("POST /v1/disks/{disk}/reclaim", s.reclaimDisk)
	s.route("GET /v1/disks/{disk}/changes", s.changes)
	s.route("GET /v1/disks/{disk}/exports", s.diskExports)
	s.route("GET /v1/disks/{disk}/snapshots", s.listSnapshots)
	s.route("POST /v1/disks/{disk}/snapshots", s.createSnapshot)
	s.route("GET /v1/disks/{disk}/snapshots/{snap}", s.getSnapshot)
	s.route("DELETE /v1/disks/{disk}/snapshots/{snap}", s.deleteSnapshot)
	s.route("GET /v1/disks/{disk}/snapshots/{snap}/root", s.snapshotRoot)
	s.route("GET /v1/disks/{disk}/snapshots/{snap}/exports", s.snapshotExports)
	s.route("POST /v1/disks/{disk}/snapshots/{snap}/attach", s.attachSnapshot)
	s.route("DELETE /v1/disks/{disk}/snapshots/{snap}/attach/{id}", s.detachSnapshot)
	s.route("GET /v1/disks/{disk}/lease", s.getLease)
	s.route("POST /v1/disks/{disk}/lease", s.acquireLease)
	s.route("PUT /v1/disks/{disk}/lease/{id}", s.renewLease)
	s.route("DELETE /v1/disks/{disk}/lease/{id}", s.releaseLease)
	s.route("POST /v1/disks/{disk}/tickets", s.diskTicket)
	s.route("POST /v1/disks/{disk}/snapshots/{snap}/tickets", s.snapshotTicket)
	s.route("GET /v1/tickets", s.listTickets)
	s.route("DELETE /v1/tickets/{id}", s.deleteTicket)
	s.route("GET /v1/host", s.hostInfo)
	s.route("GET /v1/datastore", s.datastoreSpace)
	s.route("POST /v1/disks/{disk}/compare-and-write", s.compareAndWrite)
	s.route("GET /v1/tasks", s.listTasks)
	s.route("GET /v1/tasks/{id}", s.getTask)
	s.registerFileRoutes()
	s.registerRecoveryRoutes()
	s.route("GET /v1/jobs", s.listJobs)
	s.route("GET /v1/jobs/{id}", s.getJob)
	s.route("POST /v1/jobs/{id}/cancel", s.cancelJob)
	s.route("GET /v1/jobs/{id}/log", s.jobLog)
	s.route("GET /v1/policies", s.listPolicies)
	s.route("POST /v1/policies", s.createPolicy)
	s.route("GET /v1/policies/{name}", s.getPolicy)
	s.route("PUT /v1/policies/{name}", s.updatePolicy)
	s.route("DELETE /v1/policies/{name}", s.deletePolicy)
	s.route("POST /v1/policies/{name}/run", s.runPolicy)
	s.route("POST /v1/policies/{name}/restore", s.restorePoint)
	s.route("POST /v1/policies/{name}/serve-point", s.servePoint)
	s.raw("GET /v1/policies/{name}/points/{point}/files", http.HandlerFunc(s.policyFiles))
	s.route("POST /v1/console/links", s.createLink)
	s.raw("GET /v1/openapi.json", http.HandlerFunc(serveOpenAPI))
	// The web console: pages and their data, outside /v1 and openapi.json.
	s.mux.Handle("GET /{$}", s.console)
	s.mux.Handle("GET /console/", s.console)
	s.mux.HandleFunc("GET /console/login", s.login)
	s.mux.HandleFunc("POST /console/login", s.login)
	s.mux.HandleFunc("POST /console/logout", s.logout)
	s.mux.HandleFunc("GET /console/session", s.sessionInfo)
	s.raw("GET /metrics", s.metricsHandler())
}

// Handler answers a request with a status and a JSON body, or an error
// that becomes a problem document (NewProblem, or an engine sentinel).
type Handler func(r *http.Request) (int, any, error)

// Route serves pattern ("METHOD /path") with h, as the API's own routes
// are: authenticated, bounded body, errors as problem documents. For
// services (replication) that hang their routes on the host's API.
func (s *Server) Route(pattern string, h Handler) { s.route(pattern, handler(h)) }

// RouteRaw serves pattern with a plain http.Handler (authenticated, no
// body bound): for request bodies larger than the API's 1 MiB.
func (s *Server) RouteRaw(pattern string, h http.Handler) { s.raw(pattern, h) }

// Registry is the registry /metrics serves, for services' collectors.
func (s *Server) Registry() prometheus.Registerer { return s.reg }

func (s *Server) route(pattern string, h handler) {
	s.raw(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		status, body, err := h(r)
		if err != nil {
			p := toProblem(err, aboutDisk)
			if p.Status >= 500 {
				s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeProblem(w, p)
			return
		}
		writeJSON(w, status, body)
	}))
}

func (s *Server) raw(pattern string, h http.Handler) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, h)
}

// Routes lists the registered patterns ("METHOD /path").
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// Handler is the API with authentication, logging and problem documents
// for unknown routes.
func (s *Server) Handler() http.Handler {
	return s.logged(s.authenticated(http.HandlerFunc(s.dispatch)))
}

// dispatch turns the mux's plain-text 404 and 405 into problem documents.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r) // sets the path values, which Handler does not
		return
	}
	rec := &codeRecorder{h: http.Header{}, code: http.StatusOK}
	h.ServeHTTP(rec, r)
	if allow := rec.h.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	writeProblem(w, wire.Problem{Type: wire.ProblemInvalidRequest, Title: titles[wire.ProblemInvalidRequest],
		Status: rec.code, Detail: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
}

// codeRecorder keeps only the status and headers of the mux's fallback.
type codeRecorder struct {
	h    http.Header
	code int
}

// Header implements http.ResponseWriter.
func (c *codeRecorder) Header() http.Header { return c.h }

// Write implements http.ResponseWriter, discarding the body.
func (c *codeRecorder) Write(p []byte) (int, error) { return len(p), nil }

// WriteHeader implements http.ResponseWriter, recording the status code.
func (c *codeRecorder) WriteHeader(code int) { c.code = code }

type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader implements http.ResponseWriter, recording the status code.
func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush keeps long-poll and streaming responses working through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		s.log.Info("api", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"dur", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

// Serve answers API requests on l until Shutdown. Connections over a unix
// socket are trusted; others need a bearer token.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, ends long polls, and waits for the
// requests in flight (or ctx).
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(s.stop)
	err := s.srv.Shutdown(ctx)
	s.closeAttachments(ctx)
	return err
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return problem(http.StatusRequestEntityTooLarge, wire.ProblemInvalidRequest, "request body too large")
		}
		return badRequest("bad JSON body: " + err.Error())
	}
	return nil
}

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(wire.OpenAPI)
}

// SetReplication gives the console the host's replication service (its
// replication page and events).
func (s *Server) SetReplication(r console.Replication) { s.console.SetReplication(r) }

package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/api"
)

// routes mounts the source routes (/v1/replications: the unix socket or
// an unscoped token) and the target routes (/v1/replicas: the unix
// socket or a token of scope "replication" only).
func (s *Service) routes() {
	a := s.api
	a.Route("GET /v1/replications", s.listGroups)
	a.Route("POST /v1/replications", s.createGroup)
	a.Route("GET /v1/replications/{name}", s.getGroup)
	a.Route("DELETE /v1/replications/{name}", s.deleteGroup)
	a.Route("POST /v1/replications/{name}/{action}", s.groupAction)
	a.Route("GET /v1/replicas", s.guard(s.listReplicas, true))
	a.Route("GET /v1/replicas/{group}", s.guard(s.getReplica, true))
	a.Route("PUT /v1/replicas/{group}", s.replicaOnly(s.putReplica))
	a.Route("DELETE /v1/replicas/{group}", s.replicaOnly(s.deleteReplica))
	a.Route("POST /v1/replicas/{group}/cycles", s.replicaOnly(s.beginCycle))
	a.Route("POST /v1/replicas/{group}/cycles/{cycle}/commit", s.replicaOnly(s.commitCycle))
	a.RouteRaw("POST /v1/replicas/{group}/cycles/{cycle}/disks/{disk}", http.HandlerFunc(s.batch))
	a.Route("POST /v1/replicas/{group}/disks/{disk}/checksums", s.replicaOnly(s.checksums))
	a.Route("POST /v1/replicas/{group}/{action}", s.guard(s.replicaAction, true))
}

// replicaOnly refuses requests without the replication scope.
func (s *Service) replicaOnly(h api.Handler) api.Handler { return s.guard(h, false) }

// guard refuses requests without the replication scope; with operator,
// the host's operator (the unix socket, a console session) is let in
// too: the recovery operations and the replicas' state are theirs.
func (s *Service) guard(h api.Handler, operator bool) api.Handler {
	return func(r *http.Request) (int, any, error) {
		if !api.HasScope(r.Context(), api.ScopeReplication) && !(operator && api.Operator(r.Context())) {
			return 0, nil, api.NewProblem(http.StatusForbidden, wire.ProblemUnauthorized,
				"replica routes need a token of scope replication (blockwise token create --scope replication)")
		}
		if !s.target.ready.Load() { // the start's rollback (R4) comes first
			return 0, nil, api.NewProblem(http.StatusServiceUnavailable, wire.ProblemUnavailable, "replicas are being recovered; retry")
		}
		st, body, err := h(r)
		return st, body, problemFor(err)
	}
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.NewProblem(http.StatusBadRequest, wire.ProblemInvalidRequest, "bad JSON body: "+err.Error())
	}
	return nil
}

func (s *Service) listGroups(r *http.Request) (int, any, error) {
	return http.StatusOK, s.Groups(), nil
}

func (s *Service) createGroup(r *http.Request) (int, any, error) {
	var req wire.CreateReplicationRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	g, err := s.create(r.Context(), req)
	if err != nil {
		return 0, nil, problemFor(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return http.StatusCreated, g.view(), nil
}

func (s *Service) getGroup(r *http.Request) (int, any, error) {
	g, err := s.group(r.PathValue("name"))
	if err != nil {
		return 0, nil, problemFor(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return http.StatusOK, g.view(), nil
}

func (s *Service) deleteGroup(r *http.Request) (int, any, error) {
	return http.StatusNoContent, nil, problemFor(s.remove(r.Context(), r.PathValue("name")))
}

// groupAction: pause, resume (answer the group); sync, failover (tasks);
// resync (the group, once decided).
func (s *Service) groupAction(r *http.Request) (int, any, error) {
	g, err := s.group(r.PathValue("name"))
	if err != nil {
		return 0, nil, problemFor(err)
	}
	name := r.PathValue("name")
	switch act := r.PathValue("action"); act {
	case "pause", "resume":
		return g.setPaused(act == "pause")
	case "sync":
		t := s.api.StartTask(wire.JobReplication, "replication-sync", name, func(ctx context.Context, f *api.FuncTask) error {
			return g.cycle(withProgress(ctx, f.SetProgress))
		})
		return http.StatusAccepted, t, nil
	case "failover":
		t := s.api.StartTask(wire.JobReplication, "replication-planned-failover", name, func(ctx context.Context, f *api.FuncTask) error {
			return g.planned(withProgress(ctx, f.SetProgress))
		})
		return http.StatusAccepted, t, nil
	case "resync":
		var req wire.ResyncRequest
		if err := decodeBody(r, &req); err != nil {
			return 0, nil, err
		}
		if err := g.resync(r.Context(), req.Winner); err != nil {
			return 0, nil, problemFor(err)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		return http.StatusOK, g.view(), nil
	default:
		return 0, nil, api.NewProblem(http.StatusNotFound, wire.ProblemInvalidRequest, "no action "+act+" (pause, resume, sync, failover, resync)")
	}
}

func (g *group) setPaused(p bool) (int, any, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Paused = p
	if p {
		g.event("paused")
	} else {
		g.event("resumed")
	}
	if err := g.save(); err != nil {
		return 0, nil, err
	}
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return http.StatusOK, g.view(), nil
}

func (s *Service) listReplicas(r *http.Request) (int, any, error) {
	out, err := s.Replicas()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out, nil
}

// getReplica answers the group; a failed-over one also says whether its
// disks took writes since the point (split-brain detection).
func (s *Service) getReplica(r *http.Request) (int, any, error) {
	st, err := s.target.get(r.PathValue("group"))
	if err != nil {
		return 0, nil, err
	}
	if st.State == targetFailedOver {
		if st.WritesSincePoint, err = s.target.writesSincePoint(r.Context(), st); err != nil {
			return 0, nil, err
		}
	}
	return http.StatusOK, st.Replica, nil
}

func (s *Service) putReplica(r *http.Request) (int, any, error) {
	var req wire.PutReplicaRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Reverse > 0 {
		st, err := s.becomeReplica(r.Context(), r.PathValue("group"), req)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, st.Replica, nil
	}
	st, err := s.target.put(r.Context(), r.PathValue("group"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, st.Replica, nil
}

func (s *Service) deleteReplica(r *http.Request) (int, any, error) {
	t := s.target
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(r.PathValue("group"))
	if err != nil {
		return 0, nil, err
	}
	if len(st.Tests) > 0 {
		return 0, nil, fmt.Errorf("%w: a test failover runs (failover --cleanup first)", ErrState)
	}
	for _, rd := range st.Disks {
		s.h.Unprotect(rd.Name)
	}
	return http.StatusNoContent, nil, t.store.remove(st.Group)
}

func (s *Service) beginCycle(r *http.Request) (int, any, error) {
	var req wire.BeginCycleRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	st, err := s.target.begin(r.PathValue("group"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, st.Replica, nil
}

func (s *Service) commitCycle(r *http.Request) (int, any, error) {
	var req wire.CommitCycleRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	p, err := s.target.commit(r.Context(), r.PathValue("group"), r.PathValue("cycle"), req.Time, req.Roots)
	if errors.Is(err, ErrRootMismatch) {
		s.log.Error("replica point refused", "group", r.PathValue("group"), "err", err)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

// batch is the data route: its body is larger than the API's JSON
// bound, so it is a raw handler with its own.
func (s *Service) batch(w http.ResponseWriter, r *http.Request) {
	h := s.replicaOnly(func(r *http.Request) (int, any, error) {
		q := r.URL.Query()
		from, err1 := strconv.ParseInt(q.Get("from"), 10, 64)
		to, err2 := strconv.ParseInt(q.Get("to"), 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, nil, fmt.Errorf("%w: from and to: %v", ErrInvalid, err)
		}
		body := http.MaxBytesReader(w, r.Body, maxBatchBody)
		ack, err := s.target.apply(r.Context(), r.PathValue("group"), r.PathValue("cycle"), r.PathValue("disk"),
			from, to, body, r.Header.Get("Content-Encoding") == "zstd")
		io.Copy(io.Discard, body)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]int64{"progress": ack}, nil
	})
	status, body, err := h(r)
	if err != nil {
		p := api.ProblemOf(err)
		w.Header().Set("Content-Type", wire.ProblemContentType)
		w.WriteHeader(p.Status)
		json.NewEncoder(w).Encode(p)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func (s *Service) checksums(r *http.Request) (int, any, error) {
	var req wire.ChecksumsRequest
	if err := decodeBody(r, &req); err != nil {
		return 0, nil, err
	}
	sums, err := s.target.checksums(r.Context(), r.PathValue("group"), r.PathValue("disk"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, wire.Checksums{Sums: sums}, nil
}

// replicaAction: failover (test, cleanup, disaster, planned) and
// reprotect run as tasks; demote answers when done.
func (s *Service) replicaAction(r *http.Request) (int, any, error) {
	grp := r.PathValue("group")
	if _, err := s.target.get(grp); err != nil {
		return 0, nil, err
	}
	switch act := r.PathValue("action"); act {
	case "failover":
		var req wire.FailoverRequest
		if err := decodeBody(r, &req); err != nil {
			return 0, nil, err
		}
		t := s.api.StartTask(wire.JobReplication, "failover-"+req.Mode, grp, func(ctx context.Context, _ *api.FuncTask) error {
			return s.target.failover(ctx, grp, req)
		})
		return http.StatusAccepted, t, nil
	case "reprotect":
		var req wire.ReprotectRequest
		if err := decodeBody(r, &req); err != nil {
			return 0, nil, err
		}
		t := s.api.StartTask(wire.JobReplication, "reprotect", grp, func(ctx context.Context, _ *api.FuncTask) error {
			return s.reprotect(ctx, grp, req)
		})
		return http.StatusAccepted, t, nil
	case "promote": // a planned migration's last step, answered when done
		var req wire.FailoverRequest
		if err := decodeBody(r, &req); err != nil {
			return 0, nil, err
		}
		req.Mode = "planned"
		if err := s.target.promote(r.Context(), grp, req); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]string{"state": targetFailedOver}, nil
	case "demote":
		if err := s.target.demote(r.Context(), grp); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, map[string]string{"state": targetReceiving}, nil
	default:
		return 0, nil, api.NewProblem(http.StatusNotFound, wire.ProblemInvalidRequest, "no action "+act+" (failover, reprotect, promote, demote)")
	}
}

var _ = time.Second

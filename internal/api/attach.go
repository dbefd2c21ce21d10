package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
)

// maxSockPath is below the 108 bytes of sun_path, with room for the NUL.
const maxSockPath = 100

// attachment is one private NBD server for one snapshot (hotadd): its own
// socket, so nothing else can reach the export and removing the
// attachment removes every trace of it.
type attachment struct {
	view   wire.Attachment
	srv    *nbd.Server
	done   chan struct{} // closed when Serve returned
	tmpDir string        // set when the socket could not live in the datastore
}

// attachments are a Server's live attachments by ID.
type attachments struct {
	mu sync.Mutex
	m  map[string]*attachment
}

// oneExport serves a single export name of the host and lists only it.
type oneExport struct {
	h    *host.Host
	name string
}

var _ nbd.Exporter = (*oneExport)(nil)

// Open opens the one export this socket serves ("" names it too).
func (e oneExport) Open(ctx context.Context, name string) (nbd.Export, error) {
	if name != e.name && name != "" {
		return nil, fmt.Errorf("%w: %s (this socket serves %s only)", nbd.ErrUnknownExport, name, e.name)
	}
	return e.h.Open(ctx, e.name)
}

// List lists the one export.
func (e oneExport) List(context.Context) ([]nbd.ExportInfo, error) {
	return []nbd.ExportInfo{{Name: e.name, Description: "hot-added snapshot"}}, nil
}

// attachSnapshot requires a unix-socket API connection: the socket it
// returns is only usable on this machine anyway, and a remote caller
// has no business creating files in the datastore.
func (s *Server) attachSnapshot(r *http.Request) (int, any, error) {
	if trusted, _ := r.Context().Value(trustedKey{}).(bool); !trusted {
		return 0, nil, badRequest("attach needs the host's API over its unix socket (same machine)")
	}
	_, si, err := s.findSnapshot(r)
	if err != nil {
		return 0, nil, err
	}
	a, err := s.newAttachment(r.PathValue("disk") + "@" + si.ID)
	if err != nil {
		return 0, nil, err
	}
	s.log.Info("snapshot attached", "export", a.view.Export, "socket", a.view.Socket, "id", a.view.ID)
	return http.StatusCreated, a.view, nil
}

func (s *Server) newAttachment(export string) (*attachment, error) {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	a := &attachment{done: make(chan struct{})}
	sock := filepath.Join(s.h.Datastore().Dir(), "attach-"+id+".sock")
	if len(sock) > maxSockPath {
		dir, err := os.MkdirTemp("", "bwattach")
		if err != nil {
			return nil, err
		}
		a.tmpDir, sock = dir, filepath.Join(dir, "nbd.sock")
	}
	l, err := fsutil.ListenUnix(sock, 0o600, -1)
	if err != nil {
		a.cleanup()
		return nil, err
	}
	a.view = wire.Attachment{ID: id, Socket: sock, Export: export,
		URI: "nbd+unix:///" + export + "?socket=" + escapeSocket(sock)}
	a.srv = nbd.NewServer(oneExport{s.h, export}, nbd.ServerOptions{Logger: s.log})
	go func() { defer close(a.done); a.srv.Serve(l) }()
	s.attach.mu.Lock()
	s.attach.m[id] = a
	s.attach.mu.Unlock()
	return a, nil
}

// close stops the private server (draining its connections, which
// releases the snapshot) and removes the socket.
func (a *attachment) close(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	<-a.done
	a.cleanup()
	return err
}

func (a *attachment) cleanup() {
	if a.view.Socket != "" {
		os.Remove(a.view.Socket)
	}
	if a.tmpDir != "" {
		os.RemoveAll(a.tmpDir)
	}
}

func (s *Server) detachSnapshot(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	s.attach.mu.Lock()
	a, ok := s.attach.m[id]
	if ok && a.view.Export == r.PathValue("disk")+"@"+r.PathValue("snap") {
		delete(s.attach.m, id)
	} else {
		ok = false
	}
	s.attach.mu.Unlock()
	if !ok {
		return 0, nil, problem(http.StatusNotFound, wire.ProblemInvalidRequest, "no attachment "+id+" of this snapshot")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := a.close(ctx); err != nil {
		return 0, nil, err
	}
	s.log.Info("snapshot detached", "export", a.view.Export, "id", id)
	return http.StatusNoContent, nil, nil
}

// closeAttachments ends every attachment (server shutdown).
func (s *Server) closeAttachments(ctx context.Context) {
	s.attach.mu.Lock()
	all := s.attach.m
	s.attach.m = map[string]*attachment{}
	s.attach.mu.Unlock()
	for _, a := range all {
		a.close(ctx)
	}
}

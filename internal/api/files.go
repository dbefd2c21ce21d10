package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/fileres"
	"github.com/blockwise/blockwise/internal/repo"
)

// Points gives the file routes the restore points of the repository the
// daemon was given (serve --points-repo); nil serves none.
type Points interface {
	// List returns the restore points, oldest first.
	List(ctx context.Context) ([]*repo.Manifest, error)
	// Open opens point (an ID, a prefix of one, or "latest" with disk)
	// for browsing; the caller calls done when it is finished with the
	// session (done closes it, or keeps it for the next request).
	Open(ctx context.Context, point, disk string) (s *fileres.Session, done func(), err error)
}

func (s *Server) registerFileRoutes() {
	s.route("GET /v1/points", s.listPoints)
	s.raw("GET /v1/points/{point}/files", http.HandlerFunc(s.pointFiles))
}

func (s *Server) listPoints(r *http.Request) (int, any, error) {
	if s.points == nil {
		return 0, nil, errNoPoints
	}
	ms, err := s.points.List(r.Context())
	if err != nil {
		return 0, nil, pointProblem(err)
	}
	out := make([]wire.Point, 0, len(ms))
	for _, m := range ms {
		out = append(out, wire.Point{ID: m.ID.String(), Disk: m.Disk, Time: m.Time, Size: int64(m.Size)})
	}
	return http.StatusOK, out, nil
}

var errNoPoints = problem(http.StatusNotFound, wire.ProblemPointNotFound, "this host serves no restore points: start blockwise serve with --points-repo")

// pointFiles answers GET /v1/points/{point}/files?path=P[&disk=D]
// [&archive=tar|zip]: a directory's listing (JSON) or, with archive, the
// directory as an archive; a file's bytes.
func (s *Server) pointFiles(w http.ResponseWriter, r *http.Request) {
	if s.points == nil {
		s.filesFailed(w, r, errNoPoints)
		return
	}
	s.filesOf(w, r, func(ctx context.Context, point string) (*fileres.Session, func(), error) {
		return s.points.Open(ctx, point, r.URL.Query().Get("disk"))
	})
}

// opener opens a point (an ID or a prefix of one) for one request.
type opener func(ctx context.Context, point string) (*fileres.Session, func(), error)

// filesOf answers a file route with the point open opens.
func (s *Server) filesOf(w http.ResponseWriter, r *http.Request, open opener) {
	if err := s.servePointFiles(w, r, open); err != nil {
		s.filesFailed(w, r, err)
	}
}

// filesFailed answers a file route's error (before any byte was sent).
func (s *Server) filesFailed(w http.ResponseWriter, r *http.Request, err error) {
	p := toProblem(pointProblem(err), aboutDisk)
	if p.Status >= 500 {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeProblem(w, p)
}

func (s *Server) servePointFiles(w http.ResponseWriter, r *http.Request, open opener) error {
	q := r.URL.Query()
	path, archive := q.Get("path"), q.Get("archive")
	if archive != "" && archive != "tar" && archive != "zip" {
		return badRequest(fmt.Sprintf("archive=%q: want tar or zip", archive))
	}
	ctx := r.Context()
	sess, done, err := open(ctx, r.PathValue("point"))
	if err != nil {
		return err
	}
	defer done()
	ref, err := sess.Lookup(ctx, path)
	if err != nil {
		return err
	}
	n, err := sess.Stat(ctx, ref)
	if err != nil {
		return err
	}
	switch {
	case n.IsDir() && archive == "":
		return s.listDir(w, sess.Point, ref)
	case n.IsDir():
		return sendArchive(w, r, sess.Point, ref, archive)
	case n.IsRegular():
		return sendFile(w, r, sess.Point, ref, n)
	}
	return badRequest(fmt.Sprintf("%s is a %v: only files and directories are served", path, fileres.GoMode(n.Mode).Type()))
}

func (s *Server) listDir(w http.ResponseWriter, p *fileres.Point, ref fileres.Ref) error {
	ctx := context.Background()
	ents, err := p.ReadDir(ctx, ref)
	if err != nil {
		return err
	}
	out := make([]wire.PointFile, 0, len(ents))
	for _, e := range ents {
		f := wire.PointFile{Name: e.Name}
		if e.Volume != nil {
			f.Type, f.Size, f.Description = "volume", e.Volume.Size, e.Volume.Desc
			if e.Volume.Err != nil {
				f.Error = e.Volume.Err.Error()
			}
			out = append(out, f)
			continue
		}
		n, err := p.Stat(ctx, e.Ref)
		if err != nil {
			return err
		}
		f.Type, f.Mode, f.UID, f.GID, f.Size, f.Mtime = fileType(n.Mode), fileres.GoMode(n.Mode).String(), n.Uid, n.Gid, n.Size, n.Mtime
		if n.IsSymlink() {
			if f.Target, err = p.Readlink(ctx, e.Ref); err != nil {
				return err
			}
		}
		out = append(out, f)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func fileType(m uint32) string {
	switch m & fileres.ModeType {
	case fileres.ModeDir:
		return "dir"
	case fileres.ModeRegular:
		return "file"
	case fileres.ModeSymlink:
		return "symlink"
	}
	return "special"
}

// sendFile serves a file with http.ServeContent: Range requests (a
// resumed download), HEAD and If-Modified-Since work. A read error after
// the headers went out cuts the response short.
func sendFile(w http.ResponseWriter, r *http.Request, p *fileres.Point, ref fileres.Ref, n fileres.Node) error {
	f, err := p.Open(r.Context(), ref)
	if err != nil {
		return err
	}
	name := fileres.ArchiveName(r.URL.Query().Get("path"))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	http.ServeContent(w, r, name, n.Mtime, io.NewSectionReader(f, 0, n.Size))
	return nil
}

func sendArchive(w http.ResponseWriter, r *http.Request, p *fileres.Point, ref fileres.Ref, kind string) error {
	base := fileres.ArchiveName(r.URL.Query().Get("path"))
	ct := map[string]string{"tar": "application/x-tar", "zip": "application/zip"}[kind]
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": base + "." + kind}))
	w.WriteHeader(http.StatusOK)
	var err error
	if kind == "tar" {
		err = p.WriteTar(r.Context(), w, base, ref)
	} else {
		err = p.WriteZip(r.Context(), w, base, ref)
	}
	if err != nil { // too late for a problem document: abort the response
		panic(http.ErrAbortHandler)
	}
	return nil
}

// pointProblem maps the repository's and the file reader's errors to
// problem documents.
func pointProblem(err error) error {
	var pe *problemError
	switch {
	case errors.As(err, &pe):
		return err
	case errors.Is(err, fileres.ErrNotFound):
		return problem(http.StatusNotFound, wire.ProblemFileNotFound, err.Error())
	case errors.Is(err, repo.ErrNotFound):
		return problem(http.StatusNotFound, wire.ProblemPointNotFound, err.Error())
	case errors.Is(err, fileres.ErrEscape), errors.Is(err, fileres.ErrNotDir), errors.Is(err, repo.ErrInvalid):
		return badRequest(err.Error())
	case errors.Is(err, fileres.ErrUnsupported), errors.Is(err, fileres.ErrDamaged):
		return problem(http.StatusUnprocessableEntity, wire.ProblemFilesystem, err.Error())
	case errors.Is(err, repo.ErrCorrupt):
		return problem(http.StatusInternalServerError, wire.ProblemCorrupt, err.Error())
	case errors.Is(err, repo.ErrLocked):
		return problem(http.StatusConflict, wire.ProblemDiskBusy, err.Error())
	}
	return err
}

package api

import (
	"errors"
	"fmt"
	"net/http"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/labels"
)

// putLabels replaces a disk's labels with the body's (a JSON object of
// strings) and answers the disk.
func (s *Server) putLabels(r *http.Request) (int, any, error) {
	var set map[string]string
	return s.changeLabels(r, &set, func() (map[string]string, []string, bool) { return set, nil, true })
}

// patchLabels merges the body into a disk's labels, as a JSON merge
// patch (RFC 7396): a string sets a label, null removes it.
func (s *Server) patchLabels(r *http.Request) (int, any, error) {
	var patch map[string]*string
	return s.changeLabels(r, &patch, func() (map[string]string, []string, bool) {
		set, remove := map[string]string{}, []string{}
		for k, v := range patch {
			if v == nil {
				remove = append(remove, k)
			} else {
				set[k] = *v
			}
		}
		return set, remove, false
	})
}

// changeLabels decodes the body into body, applies what change makes
// of it, and answers the disk with its new labels.
func (s *Server) changeLabels(r *http.Request, body any, change func() (map[string]string, []string, bool)) (int, any, error) {
	d, name, err := s.openDisk(r)
	if err != nil {
		return 0, nil, err
	}
	if err := decode(r, body); err != nil {
		return 0, nil, err
	}
	st, err := s.h.Labels()
	if err != nil {
		return 0, nil, err
	}
	set, remove, replace := change()
	if _, err := st.Update(name, set, remove, replace); err != nil {
		return 0, nil, labelError(err)
	}
	wd, err := s.describe(name, d)
	return http.StatusOK, wd, err
}

func labelError(err error) error {
	if errors.Is(err, labels.ErrInvalid) {
		return badRequest(err.Error())
	}
	return err
}

// selectDisks keeps the disks whose labels a ?selector= selects (all
// without one).
func (s *Server) selectDisks(r *http.Request, names []string) ([]string, map[string]map[string]string, error) {
	st, err := s.h.Labels()
	if err != nil {
		return nil, nil, err
	}
	all := st.All()
	q := r.URL.Query().Get("selector")
	if q == "" {
		return names, all, nil
	}
	sel, err := labels.ParseSelector(q)
	if err != nil {
		return nil, nil, labelError(fmt.Errorf("selector: %w", err))
	}
	var out []string
	for _, n := range names {
		if sel.Matches(all[n]) {
			out = append(out, n)
		}
	}
	return out, all, nil
}

// withLabels sets a described disk's labels (never nil in answers).
func withLabels(d *wire.Disk, l map[string]string) {
	if l == nil {
		l = map[string]string{}
	}
	d.Labels = l
}

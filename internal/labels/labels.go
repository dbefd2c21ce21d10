package labels

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/metafile"
)

// ErrInvalid reports a label, a set of labels or a selector that is not
// well formed.
var ErrInvalid = errors.New("invalid labels")

// MaxPerDisk bounds a disk's labels.
const MaxPerDisk = 64

// File is the store's file name in the datastore.
const File = "disk-labels"

// magic and version frame the file (docs/labels.md).
const (
	magic   = "BWLABEL1"
	version = 1
)

var (
	validKey   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	validValue = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
)

// ValidKey reports whether k may be a label's key.
func ValidKey(k string) error {
	if !validKey.MatchString(k) {
		return fmt.Errorf("%w: key %q: want 1-63 letters, digits or ._/-, starting and ending with a letter or digit", ErrInvalid, k)
	}
	return nil
}

// Validate checks a disk's labels.
func Validate(l map[string]string) error {
	if len(l) > MaxPerDisk {
		return fmt.Errorf("%w: %d labels, at most %d", ErrInvalid, len(l), MaxPerDisk)
	}
	for k, v := range l {
		if err := ValidKey(k); err != nil {
			return err
		}
		if !validValue.MatchString(v) {
			return fmt.Errorf("%w: value %q of %s: want 0-63 letters, digits or ._-", ErrInvalid, v, k)
		}
	}
	return nil
}

// Parse reads "k=v" pairs (the CLI's arguments) into labels; "k-" in
// the pairs names a key to remove, returned apart.
func Parse(pairs []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok && strings.HasSuffix(p, "-") {
			k = strings.TrimSuffix(p, "-")
			if err := ValidKey(k); err != nil {
				return nil, nil, err
			}
			remove = append(remove, k)
			continue
		}
		if !ok {
			return nil, nil, fmt.Errorf("%w: %q: want KEY=VALUE or KEY- (to remove)", ErrInvalid, p)
		}
		set[k] = v
	}
	return set, remove, Validate(set)
}

// String renders labels as "k=v,k2=v2", keys sorted.
func String(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}

// Store is the labels of a datastore's disks. Safe for concurrent use.
type Store struct {
	path string
	mu   sync.Mutex
	m    map[string]map[string]string
}

// Open reads DIR/disk-labels (absent: no labels); a damaged file is an
// error, never no labels (docs/labels.md invariant 2).
func Open(dir string) (*Store, error) {
	s := &Store{path: filepath.Join(dir, File), m: map[string]map[string]string{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	_, body, err := metafile.Decode(s.path, magic, version, b)
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	if err := json.Unmarshal(body, &s.m); err != nil {
		return nil, fmt.Errorf("labels: %s: %w: %v", s.path, metafile.ErrCorrupt, err)
	}
	for d, l := range s.m {
		if err := Validate(l); err != nil {
			return nil, fmt.Errorf("labels: %s: disk %s: %w", s.path, d, err)
		}
	}
	return s, nil
}

// Get returns a copy of a disk's labels (empty, never nil).
func (s *Store) Get(disk string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := maps.Clone(s.m[disk])
	if out == nil {
		out = map[string]string{}
	}
	return out
}

// All returns a copy of every disk's labels.
func (s *Store) All() map[string]map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]string, len(s.m))
	for d, l := range s.m {
		out[d] = maps.Clone(l)
	}
	return out
}

// Update sets the labels in set and removes those in remove (replace:
// the disk's labels become set alone), saves, and returns the result.
func (s *Store) Update(disk string, set map[string]string, remove []string, replace bool) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := maps.Clone(s.m[disk])
	if replace || l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, set)
	for _, k := range remove {
		delete(l, k)
	}
	if err := Validate(l); err != nil {
		return nil, err
	}
	if err := s.saveLocked(disk, l); err != nil {
		return nil, err
	}
	return maps.Clone(l), nil
}

// Delete forgets a disk's labels (the disk is removed, or a new disk
// takes a free name).
func (s *Store) Delete(disk string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[disk]; !ok {
		return nil
	}
	return s.saveLocked(disk, nil)
}

// saveLocked writes the store with disk's labels l (none if empty) and
// only then changes the memory, so a failed write changes nothing
// (docs/labels.md invariant 1).
func (s *Store) saveLocked(disk string, l map[string]string) error {
	next := maps.Clone(s.m)
	if len(l) == 0 {
		delete(next, disk)
	} else {
		next[disk] = l
	}
	body, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := fsutil.WriteAtomic(s.path, metafile.Encode(magic, version, body)); err != nil {
		return fmt.Errorf("labels: save %s: %w", s.path, err)
	}
	s.m = next
	return nil
}

// requirement is one term of a selector.
type requirement struct {
	key, value string
	op         string // "=", "!=", "exists", "absent"
}

// Selector is a parsed selector; the zero Selector selects every disk.
type Selector struct {
	src  string
	reqs []requirement
}

// ParseSelector reads a selector (package doc).
func ParseSelector(s string) (Selector, error) {
	sel := Selector{src: s}
	if strings.TrimSpace(s) == "" {
		return sel, fmt.Errorf("%w: empty selector", ErrInvalid)
	}
	for _, term := range strings.Split(s, ",") {
		r, err := parseTerm(strings.TrimSpace(term))
		if err != nil {
			return Selector{}, fmt.Errorf("selector %q: %w", s, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

func parseTerm(t string) (requirement, error) {
	var r requirement
	switch {
	case strings.Contains(t, "!="):
		r.key, r.value, _ = strings.Cut(t, "!=")
		r.op = "!="
	case strings.Contains(t, "=="):
		r.key, r.value, _ = strings.Cut(t, "==")
		r.op = "="
	case strings.Contains(t, "="):
		r.key, r.value, _ = strings.Cut(t, "=")
		r.op = "="
	case strings.HasPrefix(t, "!"):
		r.key, r.op = t[1:], "absent"
	default:
		r.key, r.op = t, "exists"
	}
	if err := ValidKey(r.key); err != nil {
		return r, err
	}
	if _, err := path.Match(r.value, ""); err != nil {
		return r, fmt.Errorf("%w: value pattern %q: %v", ErrInvalid, r.value, err)
	}
	return r, nil
}

// Matches reports whether labels l meet every requirement.
func (sel Selector) Matches(l map[string]string) bool {
	for _, r := range sel.reqs {
		v, ok := l[r.key]
		m := false
		if ok && (r.op == "=" || r.op == "!=") {
			m, _ = path.Match(r.value, v)
		}
		switch {
		case r.op == "exists" && !ok, r.op == "absent" && ok,
			r.op == "=" && !m, r.op == "!=" && m:
			return false
		}
	}
	return true
}

// String is the selector as given.
func (sel Selector) String() string { return sel.src }

package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// record is a policy as policies.json keeps it: no secrets, and the
// times its schedules last fired.
type record struct {
	Policy     wire.Policy `json:"policy"`
	LastRun    time.Time   `json:"lastRun"`
	LastPrune  time.Time   `json:"lastPrune"`
	LastCheck  time.Time   `json:"lastCheck"`
	CheckRound int         `json:"checkRound"`
}

// secret is what the credentials file keeps per policy.
type secret struct {
	Password  string `json:"password,omitempty"`
	AccessKey string `json:"accessKey,omitempty"`
	SecretKey string `json:"secretKey,omitempty"`
}

// files are the scheduler's two files in the datastore.
type files struct{ policies, credentials string }

func newFiles(datastore string) files {
	return files{filepath.Join(datastore, "policies.json"), filepath.Join(datastore, "policy-credentials.json")}
}

// load reads both files (absent: none). A credentials file that others
// can read is refused: its secrets open the repositories.
func (f files) load() (map[string]*record, map[string]secret, error) {
	recs := map[string]*record{}
	secs := map[string]secret{}
	if err := readJSON(f.policies, &recs); err != nil {
		return nil, nil, err
	}
	if fi, err := os.Stat(f.credentials); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s is mode %v: it holds repository passwords and must be 0600 (chmod 600 it)", f.credentials, fi.Mode().Perm())
	}
	if err := readJSON(f.credentials, &secs); err != nil {
		return nil, nil, err
	}
	return recs, secs, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// save writes both files atomically, each a fresh 0600 file.
func (f files) save(recs map[string]*record, secs map[string]secret) error {
	for path, v := range map[string]any{f.policies: recs, f.credentials: secs} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := fsutil.WriteAtomic(path, b); err != nil {
			return fmt.Errorf("save %s: %w", path, err)
		}
	}
	return nil
}

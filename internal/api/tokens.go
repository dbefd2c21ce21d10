package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// TokensFile is the name of the token store in a datastore.
const TokensFile = "tokens.json"

// ErrTokenNotFound is returned by Revoke for an unknown token.
var ErrTokenNotFound = errors.New("token not found")

// Token is a stored API token. Only the SHA-256 of its secret is kept, so
// reading the file does not give access.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Scopes limit the token to some routes ("replication": the replica
	// routes under /v1/replicas, which no unscoped token reaches); none
	// is every route but those.
	Scopes []string `json:"scopes,omitempty"`
}

// ScopeReplication is the scope of the token a source host presents to
// its replication target: it reaches /v1/replicas and nothing else.
const ScopeReplication = "replication"

// ErrBadScope is an unknown token scope.
var ErrBadScope = errors.New("unknown token scope")

type tokenFile struct {
	Tokens []Token `json:"tokens"`
}

// Tokens is the token store of a datastore. The CLI edits the file while
// the server runs, so the server rereads it whenever it changes.
type Tokens struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	list []Token
}

// OpenTokens returns the store in datastore directory dir.
func OpenTokens(dir string) *Tokens { return &Tokens{path: filepath.Join(dir, TokensFile)} }

// load rereads the file if it changed; mu held.
func (ts *Tokens) load() error {
	fi, err := os.Stat(ts.path)
	if errors.Is(err, os.ErrNotExist) {
		ts.list, ts.mod, ts.size = nil, time.Time{}, 0
		return nil
	}
	if err != nil {
		return err
	}
	if fi.ModTime().Equal(ts.mod) && fi.Size() == ts.size && ts.list != nil {
		return nil
	}
	data, err := os.ReadFile(ts.path)
	if err != nil {
		return err
	}
	var f tokenFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%s: %w", ts.path, err)
	}
	ts.list, ts.mod, ts.size = f.Tokens, fi.ModTime(), fi.Size()
	if ts.list == nil {
		ts.list = []Token{}
	}
	return nil
}

func (ts *Tokens) save() error {
	if err := os.MkdirAll(filepath.Dir(ts.path), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(tokenFile{Tokens: ts.list}, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteAtomic(ts.path, append(data, '\n')); err != nil {
		return fmt.Errorf("save tokens: %w", err)
	}
	ts.list = nil // force a reload: the mtime may not have moved
	return nil
}

// List returns the stored tokens (without secrets).
func (ts *Tokens) List() ([]Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := ts.load(); err != nil {
		return nil, err
	}
	return append([]Token(nil), ts.list...), nil
}

// Create adds a token named name and returns it with its secret, which
// is not stored anywhere.
func (ts *Tokens) Create(name string) (Token, string, error) { return ts.CreateScoped(name, nil) }

// CreateScoped is Create for a token limited to scopes (ScopeReplication).
func (ts *Tokens) CreateScoped(name string, scopes []string) (Token, string, error) {
	for _, sc := range scopes {
		if sc != ScopeReplication {
			return Token{}, "", fmt.Errorf("%w %q (known: %s)", ErrBadScope, sc, ScopeReplication)
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := ts.load(); err != nil {
		return Token{}, "", err
	}
	idb, secretb := make([]byte, 4), make([]byte, 32)
	rand.Read(idb)
	rand.Read(secretb)
	id := hex.EncodeToString(idb)
	secret := "bw_" + id + "_" + base64.RawURLEncoding.EncodeToString(secretb)
	t := Token{ID: id, Name: name, Hash: hashSecret(secret), Created: time.Now().UTC(), Scopes: scopes}
	ts.list = append(ts.list, t)
	return t, secret, ts.save()
}

// Revoke removes the token with the given ID or name.
func (ts *Tokens) Revoke(idOrName string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := ts.load(); err != nil {
		return err
	}
	kept := ts.list[:0:0]
	for _, t := range ts.list {
		if t.ID != idOrName && t.Name != idOrName {
			kept = append(kept, t)
		}
	}
	if len(kept) == len(ts.list) {
		return fmt.Errorf("%s: %w", idOrName, ErrTokenNotFound)
	}
	ts.list = kept
	return ts.save()
}

// Check reports whether secret is a valid token. Every stored hash is
// compared in constant time so timing says nothing about near misses.
func (ts *Tokens) Check(secret string) (Token, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if secret == "" || ts.load() != nil {
		return Token{}, false
	}
	h := []byte(hashSecret(secret))
	var found Token
	ok := false
	for _, t := range ts.list {
		if subtle.ConstantTimeCompare(h, []byte(t.Hash)) == 1 {
			found, ok = t, true
		}
	}
	return found, ok
}

// Has reports whether the token with that ID is still listed (the file
// is reread when it changed, so `blockwise token revoke` counts at once).
// An unreadable file counts as revoked.
func (ts *Tokens) Has(id string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.load() != nil {
		return false
	}
	for _, t := range ts.list {
		if t.ID == id {
			return true
		}
	}
	return false
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

package repo

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns for one of these
// conditions wraps the sentinel with %w, so test with errors.Is.
var (
	// ErrWrongPassword: no key file could be opened with the password.
	ErrWrongPassword = errors.New("repo: wrong password")
	// ErrCorrupt: stored bytes failed authentication, a checksum, a
	// content-hash check, or could not be decoded. The message names the
	// object (e.g. the pack) that is bad.
	ErrCorrupt = errors.New("repo: corrupt data")
	// ErrNotFound: a manifest, blob or repository does not exist.
	ErrNotFound = errors.New("repo: not found")
	// ErrExists: Init found a repository already there.
	ErrExists = errors.New("repo: repository already exists")
	// ErrLocked: a conflicting, unexpired lock is held.
	ErrLocked = errors.New("repo: repository is locked")
	// ErrInvalid: a caller argument is out of range (slot, chunk length,
	// option).
	ErrInvalid = errors.New("repo: invalid argument")
	// ErrIncomplete: restore points reference blobs that no index file
	// names (an index file was lost or is damaged). Prune refuses to
	// delete anything then; RepairIndex rebuilds the index from the packs.
	ErrIncomplete = errors.New("repo: index incomplete")
	// ErrReadOnly: a lock (or other file) could not be written because
	// the repository is read-only (a read-only mount, no permission).
	// Readers can run there without a lock (SetNoLock).
	ErrReadOnly = errors.New("repo: repository is read-only")
	// ErrClosed: the writer was already committed or aborted, or failed
	// earlier and can only be aborted.
	ErrClosed = errors.New("repo: writer closed")
)

// ErrEmptyPassword: an encrypted repository was to be created, opened or
// given a key slot with an empty password, and the caller did not say
// that it means one (Options.InsecureNoPassword, Secret.InsecureNoPassword;
// restic's --insecure-no-password). It wraps ErrInvalid.
var ErrEmptyPassword = fmt.Errorf("repo: empty password: %w", ErrInvalid)

// Package retry calls an operation again while it fails in a way its
// caller calls passing (a transient backend error, a busy disk), waiting
// between calls with exponential backoff and jitter, and giving up when
// the context ends or the attempts run out. It is the one copy of that
// loop: backend.Retry and backup's snapshot calls use it. It imports
// nothing of the project, so any layer may.
//
// Vocabulary: an attempt is one call of the operation; the delay before
// attempt n+1 is Base·2^(n-1), capped at Max, of which a random part
// (up to half) is left out, so that many clients failing together do not
// come back together ("equal jitter").
package retry

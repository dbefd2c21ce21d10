// Package backendtest is the conformance suite for backend.Backend
// implementations: every implementation's tests call RunTests so the
// contract in package backend is checked once, the same way, for all.
// Faulty injects transient faults around any backend, so tests can check
// that callers retry and stay consistent; it lives here, not in package
// backend, so it never ships in a binary.
package backendtest

// Package backendtest is the conformance suite for backend.Backend
// implementations: every implementation's tests call RunTests so the
// contract in package backend is checked once, the same way, for all.
package backendtest

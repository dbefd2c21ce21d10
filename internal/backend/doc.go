// Package backend defines the storage contract a blockwise repository is
// written against, plus wrappers that add behaviour without touching the
// implementations: Retry (bounded retries of transient errors), Limit
// (bounded operations in flight), Throttle (bytes per second each way,
// for --limit-upload/--limit-download), Cache (local copies of a remote
// store's content-addressed objects, checked against their names on every
// read). Seeded error injection for tests (Faulty) lives in backendtest.
//
// A Backend is a flat store of immutable, named objects grouped by type,
// modelled on restic's backend and kopia's blob storage. The repository
// above it never updates an object in place: it only creates, reads,
// lists and removes. That is what lets the contract be small and lets
// object stores implement it with conditional PUTs.
//
// Implementations live in sub-packages (local, mem, s3); backendtest holds the
// conformance suite every implementation must pass.
package backend

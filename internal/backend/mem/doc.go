// Package mem is an in-memory backend.Backend for unit tests. It follows
// the full contract (atomic conditional Save, ranged Load, sentinels), so
// tests written against it hold for real backends too.
package mem

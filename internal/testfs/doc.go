// Package testfs mounts the small real file systems tests need: a tmpfs
// of a given size (to fill it: ENOSPC paths) that can be resized in
// place (to free space without restarting anything), and a read-only
// bind mount of a directory (a read-only medium, which root's
// permissions and chattr cannot simulate), and a file evicted from the
// page cache (Evict: checked with mincore, for reads that must miss).
// Tests run as root; where
// mounting is not allowed, the test is skipped. Test support only:
// production code never imports it.
package testfs

// Package fsutil holds the few file-system primitives blockwise's on-disk
// formats rely on: atomic replacement, directory sync, hole punching and
// data-extent discovery, and advisory locks.
package fsutil

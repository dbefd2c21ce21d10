// Package vfs is the file-system seam of blockwise's disk engine: the few
// file operations the engine and its journal make, behind an interface, so
// a test can put a file system of its own under the engine (one that
// forgets unsynced writes and undoes unsynced renames to simulate a power
// loss, or one that fails on demand) while production uses the operating
// system's (Default). pebble's vfs.FS and bbolt's failpoints are the
// models.
//
// Vocabulary:
//   - FS: a file system: open, create, rename, remove, list, lock.
//   - File: an open file: positional reads and writes, size, sync.
//   - durable: what survives a power loss. A file's data is durable after
//     its Sync (Datasync); a directory entry (a creation, rename or
//     removal) after the Sync of its directory (SyncDir). This is the
//     contract the engine is written against (docs/format.md, "File-system
//     contract"), and what a crashable FS simulates.
//   - capability: what only the operating system's files can do (fallocate
//     hole punching, SEEK_DATA/SEEK_HOLE, mmap, fdatasync). The helpers
//     here use it on *os.File and fall back to an equivalent in plain reads
//     and writes on any other File, so the engine runs on both.
package vfs

// Package local stores a repository in a directory of the local file
// system.
//
// Layout: one subdirectory per backend.FileType; data objects are fanned
// out into 256 subdirectories named by the first two characters of their
// name so that no directory grows past a few thousand entries; the config
// object is the file "config" at the top. Writes go to a temporary file
// under tmp/, are fsynced, then linked into place with link(2), which
// fails with EEXIST instead of replacing (the conditional create the
// contract demands), and the directory is fsynced so the name survives a
// crash; a directory it has to make (the fan-out data/xx/, the type
// directories at Open) is synced into its parent first, or a power loss
// could take it away with the packs in it (docs/repository.md, invariant
// R2). Leftovers in tmp/ after a crash are never listed and are removed
// by Open.
//
// All file access goes through a vfs.FS (the operating system's unless
// WithFS gives another), so tests cut the power under the repository
// writer with vfstest.CrashFS.
package local

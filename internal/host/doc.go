// Package host wires the disk engine to the outside: it keeps a
// datastore's disks open, serves them over NBD (export "DISK" is the live
// disk, read-write; "DISK@SNAPSHOT" a snapshot, read-only, with its CBT as
// qemu:dirty-bitmap contexts), and is what the REST API stands on.
//
// Dirty-bitmap context names: on a snapshot export,
// "qemu:dirty-bitmap:<change ID>" marks dirty every block written after
// that change ID and before the snapshot was taken, at the disk's CBT
// granularity; NBD_OPT_LIST_META_CONTEXT with the prefix
// "qemu:dirty-bitmap:" lists every change ID still answerable.
//
// Every export the host hands out holds a reference on its disk until the
// NBD server closes it, so Delete answers ErrBusy instead of pulling a
// disk from under a connected client; the same wrapper counts the I/O per
// disk that the API reports as metrics (host itself knows no HTTP).
package host

// Package qemu is a backup source for a running QEMU VM reached over its
// QMP socket: it implements backup.Host with QEMU's own dirty bitmaps,
// fleecing and NBD server, so the rest of backup (repository, restore,
// verification, retention) is the same as for host disks.
//
// Vocabulary:
//   - drive: a block node of the VM with a guest device (its node name);
//     its repository disk name is VM/NODE.
//   - owned bitmap: a dirty bitmap named blockwise-TAG-SEQ (TAG: the
//     repository's ID prefix, SEQ: a fixed-width creation time, so names
//     sort by age), persistent on qcow2 drives. The newest records; older
//     ones are disabled and hold the changes of one interval each.
//   - view: a point-in-time image of a drive: a temporary qcow2 overlay
//     backed by the drive, filled by blockdev-backup sync=none (copy
//     before write), exported read-only over QEMU's NBD server.
//   - rotation: in one QMP transaction, every drive's fleecing starts, a
//     new owned bitmap is added and the recording one is disabled; so the
//     new bitmap holds exactly the writes after the view.
//   - change ID: NAME:SIZE of the bitmap added with a view: "changes since
//     this point" for the next backup.
//   - chain check: an incremental since NAME:SIZE needs NAME on the drive,
//     consistent, the owned bitmaps from NAME on all consistent with the
//     newest of them recording up to the view, and the same size;
//     otherwise the backup is told why (backup.ErrChangeIDInvalid) and
//     reads the drive's allocated areas whole.
//   - restore into a drive (restore.go): the VM paused, the point written
//     into a qcow2 overlay (bwro-) without backing exported writable,
//     then blockdev-snapshot over the drive and an active block-commit
//     into it; the drive hashed against the point's root; the owned
//     bitmaps removed and the marker blockwise-restored-TAG added, which
//     the next view removes and reports as the chain break. Any error
//     after the pause leaves the VM paused. The private directory is made
//     by a Workspace (this host, or the libvirt host over ssh, the NBD
//     socket forwarded).
//   - restore state file (intostate.go, docs/format.md R1–R5): records a
//     restore into a drive before the pause and at each step; Open
//     recovers a killed one (intorecover.go): the commit finished when
//     the overlay was already over the drive (the drive holds the point),
//     else the overlay dropped (old content); the VM resumed only if it
//     ran before.
//   - stale: views, exports and temporary bitmaps named after a process
//     that no longer exists (a SIGKILLed backup) are removed when a
//     source opens.
package qemu

// Package libvirt is a backup source for a libvirt domain: it implements
// backup.Host with libvirt's checkpoints and pull-mode backup jobs
// (virDomainBackupBegin), reading QEMU's NBD exports of the job through
// the existing NBD client, and freezes through virDomainFSFreeze.
//
// Vocabulary:
//   - owned checkpoint: a checkpoint named blockwise-TAG-SEQ (TAG: the
//     repository's ID prefix; names sort by age). Each backup creates
//     one; older ones than its base are deleted when the job ends.
//   - job: one pull-mode backup of every chosen disk, incremental from
//     the newest owned checkpoint (libvirt merges the bitmaps), exported
//     as TARGET with the bitmap backup-TARGET.
//   - change ID: CHECKPOINT:SIZE of the checkpoint the job created.
//   - chain check: an incremental needs the job based on the parent's
//     checkpoint at the same size; otherwise backup.ErrChangeIDInvalid
//     with the reason, and the disk is read whole (allocated areas).
//   - offline: a shut-off domain has no job; each disk's image is
//     exported by its own qemu-nbd with the bitmap of the newest owned
//     checkpoint, and the point's change ID stays that checkpoint
//     (offline.go).
//   - tunnel: for a remote (qemu+ssh://) libvirtd the job's directory is
//     made on that host over ssh and its NBD socket is read through
//     ssh -L to a local socket (tunnel.go).
//   - restore into a disk: the QMP source's RestoreInto (qemu package)
//     over libvirt's monitor passthrough, the domain suspended and
//     resumed by libvirt; the owned checkpoints are deleted after it
//     (restore.go).
package libvirt

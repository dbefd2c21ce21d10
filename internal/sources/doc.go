// Package sources opens hypervisor sources by URI: a running QEMU VM
// (qemu+unix:///PATH/qmp.sock, package qemu) or a libvirt domain
// (libvirt:///system?domain=NAME, or over ssh qemu+ssh://HOST/system?...,
// package libvirt), each as a backup.Host over the VM's drives. The CLI's
// `backup` and the scheduler's policies both open sources here, so a URI
// means the same thing to both.
//
// Vocabulary:
//   - source URI: one of the schemes above; IsURI tells it from a host
//     disk's name, Check validates it without connecting.
//   - VM: an opened source: a backup.Host whose disks are the VM's drives
//     (repository disk names VM/DRIVE), with OpenView reading a drive's
//     point-in-time view; all drives' views are taken in one freeze.
//   - tag: the owner of a source's bitmaps or checkpoints, the repository
//     ID's prefix (Tag), so two repositories backing up one VM do not
//     rotate each other's.
//   - quiescing: Options.Quiesce (off, try, require) with its window and
//     hooks, for sources and for host disks with a guest agent
//     (HostQuiesce).
//   - secrets: a source URI carries no password. ssh authenticates by key
//     (keyfile=), libvirt by its socket's permissions; Check refuses a URI
//     with a password, and Redact hides one wherever a URI is echoed
//     (errors, job history, API answers).
package sources

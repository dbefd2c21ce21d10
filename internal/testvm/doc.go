// Package testvm boots real QEMU guests for tests: the Debian kernel that
// scripts/setup.sh unpacks, and an initramfs built by the test from
// busybox-static, the kernel modules the drives need (with their
// dependencies, read from each module's .modinfo), mke2fs and optionally
// qemu-ga with the libraries ldd lists.
//
// Vocabulary:
//   - drive: a virtio-blk disk given as an image file (qcow2/raw) or an
//     NBD URI, with its QEMU node name (Drive.ID), error policy and
//     discard options. Guest names follow the order: vda, vdb...
//   - shell: a virtio-serial port (org.blockwise.shell) on which the
//     guest's init runs each command the host sends and answers with its
//     output and exit status (VM.Run), independent of the console.
//   - agent: the real qemu-guest-agent on the port org.qemu.guest_agent.0,
//     whose host side is a unix socket (VM.AgentSocket).
//   - QMP: QEMU's monitor socket (VM.QMPSocket, VM.QMP).
//
// Every QEMU started is killed and reaped, and its files removed, by the
// test's cleanup; boots are bounded by Options.BootTimeout. Test support
// only: production code never imports it.
package testvm

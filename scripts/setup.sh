#!/usr/bin/env bash
# Installs what blockwise's build and tests need on a fresh Debian machine:
# the real NBD clients (qemu-utils, libnbd-bin, nbdkit), the real guests'
# parts (qemu-system-x86, a Debian kernel unpacked for the test guests,
# busybox-static, qemu-guest-agent), libvirt, headless Chromium for the web
# console, openssh-server and netcat-openbsd (a loopback sshd for qemu+ssh libvirt URIs), the file systems the offload and file-restore tests build (XFS
# with reflink, ext4, FAT, LVM, partition tables; attr's setfattr and getfattr for
# extended attributes), restic (the peer
# bench/policy.sh compares with), and the Go modules.
# The test command also installs versitygw (scripts/versitygw.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for tool in qemu-img:qemu-utils qemu-nbd:qemu-utils qemu-io:qemu-utils nbdcopy:libnbd-bin \
	nbdinfo:libnbd-bin nbdkit:nbdkit qemu-system-x86_64:qemu-system-x86 \
	qemu-ga:qemu-guest-agent busybox:busybox-static libvirtd:libvirt-daemon-system \
	virsh:libvirt-clients chromium:chromium mkfs.xfs:xfsprogs xfs_io:xfsprogs \
	mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk sgdisk:gdisk \
	lvcreate:lvm2 rsync:rsync cpio:cpio filefrag:e2fsprogs ssh:openssh-client sshd:openssh-server nc:netcat-openbsd restic:restic \
	setfattr:attr getfattr:attr; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool##*:}")
done
updated=""
if [ ${#need[@]} -gt 0 ]; then
	$SUDO apt-get update -qq; updated=1
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		$(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
# The test guests boot Debian's own kernel under TCG. It is unpacked, not
# installed (no initramfs hooks, no bootloader): the tests read vmlinuz and
# the modules they need from here (internal/testvm).
kdir=${BLOCKWISE_KERNEL_DIR:-/var/cache/blockwise/kernel}
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
	[ -n "$updated" ] || $SUDO apt-get update -qq
	tmp=$(mktemp -d); chmod 755 "$tmp" # apt downloads as _apt
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	(cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
	$SUDO mkdir -p "$kdir"
	$SUDO dpkg-deb -x "$tmp"/*.deb "$kdir"
	rm -rf "$tmp"
fi
go mod download

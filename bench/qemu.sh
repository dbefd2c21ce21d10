#!/usr/bin/env bash
# bench/qemu.sh [SIZE]   (default 4G; e.g. 1G)
#
# blockwise vs virtnbdbackup (issue 18) on one running VM under libvirt:
# a transient TCG domain (the test kernel and initramfs, see
# internal/testvm) with a SIZE qcow2 drive filled half with realistic data
# (bench/imagegen), both tools backing up the same domain through
# libvirt's checkpoints and pull-mode backup: full, then 1% of the 64 KiB
# blocks rewritten inside the guest, then incremental. Reports wall time,
# bytes read, repository growth and how long the guest was frozen
# (blockwise's own report). libvirtd runs privately (own mount namespace,
# its socket under the scratch directory); QEMU runs as root there.
# BENCH_DIR picks the scratch directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-4G}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}
need virtnbdbackup virtnbdbackup
need libvirtd libvirt-daemon-system
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils
need unshare util-linux

W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwqemu.XXXXXX")
chmod 755 "$W"
LV_PID=
cleanup() {
	virsh -c "$URI" destroy bench >/dev/null 2>&1 || true
	[ -n "$LV_PID" ] && kill "$LV_PID" 2>/dev/null && wait "$LV_PID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

mkdir -p "$W/sock" "$W/scratch" "$W/vnb"
SOCK=$W/sock/libvirt-sock
URI="qemu:///system?socket=$SOCK"
export BLOCKWISE_REPO=$W/bw-repo BLOCKWISE_PASSWORD=bench
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen && go build -o "$W/guest" ./bench/guest)

cat >"$W/libvirtd.conf" <<CONF
unix_sock_dir = "$W/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
CONF
cat >"$W/qemu.conf" <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
CONF
cat >"$W/run.sh" <<'RUN'
set -e
for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
mount --bind "$1/qemu.conf" /etc/libvirt/qemu.conf
exec libvirtd -f "$1/libvirtd.conf" -p "$1/libvirtd.pid"
RUN
unshare -m --propagation private sh "$W/run.sh" "$W" >"$W/libvirtd.log" 2>&1 &
LV_PID=$!
for _ in $(seq 100); do virsh -c "$URI" version >/dev/null 2>&1 && break; sleep 0.2; done

"$W/imagegen" gen -size "$SIZE" -out "$W/disk.raw" >/dev/null
qemu-img convert -f raw -O qcow2 "$W/disk.raw" "$W/disk.qcow2"
rm "$W/disk.raw"
"$W/guest" initramfs "$W/initrd.cpio"
{ read -r KERNEL; read -r CMDLINE; } < <("$W/guest" kernel)
cat >"$W/bench.xml" <<XML
<domain type='qemu'><name>bench</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type><kernel>$KERNEL</kernel><initrd>$W/initrd.cpio</initrd><cmdline>$CMDLINE</cmdline></os>
<on_reboot>destroy</on_reboot>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$W/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>
<controller type='virtio-serial' index='0'/>
<channel type='unix'><source mode='bind' path='$W/qga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
<channel type='unix'><source mode='bind' path='$W/shell.sock'/><target type='virtio' name='org.blockwise.shell'/></channel>
<serial type='file'><source path='$W/console.log'/></serial>
<controller type='usb' model='none'/><memballoon model='none'/>
</devices></domain>
XML
virsh -c "$URI" create "$W/bench.xml" >/dev/null
"$W/guest" run "$W/shell.sock" true
# virtnbdbackup needs a persistent domain for checkpoints? It works on transient ones with -S (scratch dir).

"$BW" repo init >/dev/null
SRC="libvirt:///system?domain=bench&socket=$SOCK"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b-a}'; }
dirbytes() { du -sb "$1" | cut -f1; }

t0=$(now); "$BW" backup "$SRC" --scratch-dir "$W/scratch" --json >"$W/bw-full.json"; t1=$(now)
BW_FULL=$(secs "$t0" "$t1")
t0=$(now); virtnbdbackup -U "$URI" -d bench -l full -o "$W/vnb" -S "$W/scratch" >"$W/vnb-full.log" 2>&1; t1=$(now)
VNB_FULL=$(secs "$t0" "$t1")
BW_REPO0=$(dirbytes "$W/bw-repo"); VNB_REPO0=$(dirbytes "$W/vnb")

# 1% of the 64 KiB blocks, rewritten in the guest (random places).
BLOCKS=$(( $(qemu-img info --output=json "$W/disk.qcow2" -U | awk -F: '/"virtual-size"/ {gsub(/[ ,]/,"",$2); print $2}') / 65536 ))
N=$(( BLOCKS / 100 ))
"$W/guest" run "$W/shell.sock" "i=0; while [ \$i -lt $N ]; do dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=\$(( (\$i * 7919) % $BLOCKS )) conv=notrunc 2>/dev/null; i=\$((i+1)); done; sync"
CHANGED=$(( N * 65536 ))

t0=$(now); "$BW" backup "$SRC" --scratch-dir "$W/scratch" --json >"$W/bw-inc.json"; t1=$(now)
BW_INC=$(secs "$t0" "$t1")
t0=$(now); virtnbdbackup -U "$URI" -d bench -l inc -o "$W/vnb" -S "$W/scratch" >"$W/vnb-inc.log" 2>&1; t1=$(now)
VNB_INC=$(secs "$t0" "$t1")
BW_GROWTH=$(( $(dirbytes "$W/bw-repo") - BW_REPO0 )); VNB_GROWTH=$(( $(dirbytes "$W/vnb") - VNB_REPO0 ))
field() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" "$2" | head -1 | tr -d '"'; }
BW_READ=$(field readBytes "$W/bw-inc.json")
FROZEN=$(sed -n 's/.*frozen by the guest agent for \([0-9.a-zµ]*\).*/\1/p' "$W/bw-inc.json" | head -1)

echo "VM drive $SIZE qcow2, half data; changed $N blocks of 64 KiB = $CHANGED bytes"
printf '%-28s %12s %14s\n' "" blockwise virtnbdbackup
printf '%-28s %12s %14s\n' "full backup (s)" "$BW_FULL" "$VNB_FULL"
printf '%-28s %12s %14s\n' "incremental backup (s)" "$BW_INC" "$VNB_INC"
printf '%-28s %12s %14s\n' "incremental bytes read" "$BW_READ" "-"
printf '%-28s %12s %14s\n' "repository growth (bytes)" "$BW_GROWTH" "$VNB_GROWTH"
printf '%-28s %12s %14s\n' "growth / changed bytes" "$(awk -v g="$BW_GROWTH" -v c="$CHANGED" 'BEGIN{printf "%.2f", g/c}')" "$(awk -v g="$VNB_GROWTH" -v c="$CHANGED" 'BEGIN{printf "%.2f", g/c}')"
printf '%-28s %12s\n' "guest frozen (incremental)" "${FROZEN:-?}"
echo "incremental speed-up: $(awk -v a="$VNB_INC" -v b="$BW_INC" 'BEGIN{printf "%.2fx", a/b}')"

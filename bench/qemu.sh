#!/usr/bin/env bash
# bench/qemu.sh [SIZE]   (default 4G; e.g. 1G)
#
# blockwise vs virtnbdbackup (issue 18): the same TCG guest (the test
# kernel and initramfs, see internal/testvm) on copies of one SIZE qcow2
# drive filled half with realistic data (bench/imagegen): blockwise
# through its QMP source (QEMU's bitmaps, fleecing, NBD export),
# virtnbdbackup through libvirt (a transient domain): full, then 1% of the
# 64 KiB blocks rewritten inside the guest, then incremental. Reports wall time,
# bytes read, repository growth and how long the guest was frozen
# (blockwise's own report). libvirtd runs privately (own mount namespace,
# its socket under the scratch directory); QEMU runs as root there.
# BENCH_DIR picks the scratch directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-4G}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# need, workdir, build_tools
. "$ROOT/bench/lib.sh"
need virtnbdbackup virtnbdbackup
need libvirtd libvirt-daemon-system
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils
need unshare util-linux

workdir bwqemu
chmod 755 "$W"
LV_PID=
QEMU_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
	[ -n "${HOLD_PID:-}" ] && kill "$HOLD_PID" 2>/dev/null
	virsh -c "$URI" destroy vnb >/dev/null 2>&1 || true
	virsh -c "$URI" destroy bw >/dev/null 2>&1 || true
	[ -n "$LV_PID" ] && kill "$LV_PID" 2>/dev/null && wait "$LV_PID" 2>/dev/null
	# BENCH_KEEP=1 keeps the logs (libvirtd's at debug level for the
	# backup and QEMU monitor) to find why a job sticks.
	if [ -n "${BENCH_KEEP:-}" ]; then rm -f "$W"/*.qcow2; echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM # replaces workdir's: libvirtd and QEMU to stop too

mkdir -p "$W/sock" "$W/scratch" "$W/vnb"
SOCK=$W/sock/libvirt-sock
URI="qemu:///system?socket=$SOCK"
export BLOCKWISE_REPO=$W/bw-repo BLOCKWISE_PASSWORD=bench
build_tools
(cd "$ROOT" && go build -o "$W/guest" ./bench/guest)

cat >"$W/libvirtd.conf" <<CONF
unix_sock_dir = "$W/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
CONF
[ -z "${BENCH_KEEP:-}" ] || printf 'log_filters = "1:qemu.qemu_backup 1:qemu.qemu_monitor 1:qemu.qemu_domain 1:qemu.qemu_process 3:util 3:rpc"\nlog_outputs = "1:file:%s/libvirtd-debug.log"\n' "$W" >>"$W/libvirtd.conf"
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
# start_domain NAME: a transient domain on its own copy of the image
# (virtnbdbackup refuses to run beside checkpoints it did not make, so
# each tool gets its own VM with the same content, one after the other).
start_domain() {
	cp --sparse=always "$W/disk.qcow2" "$W/$1.qcow2"
	cat >"$W/$1.xml" <<XML
<domain type='qemu'><name>$1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type><kernel>$KERNEL</kernel><initrd>$W/initrd.cpio</initrd><cmdline>$CMDLINE</cmdline></os>
<on_reboot>destroy</on_reboot>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$W/$1.qcow2'/><target dev='vda' bus='virtio'/></disk>
<controller type='virtio-serial' index='0'/>
<channel type='unix'><source mode='bind' path='$W/$1-qga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
<channel type='unix'><source mode='bind' path='$W/$1-shell.sock'/><target type='virtio' name='org.blockwise.shell'/></channel>
<serial type='file'><source path='$W/$1-console.log'/></serial>
<controller type='usb' model='none'/><memballoon model='none'/>
</devices></domain>
XML
	virsh -c "$URI" create "$W/$1.xml" >/dev/null
	"$W/guest" run "$W/$1-shell.sock" true
}

"$BW" repo init >/dev/null
# As a cron job runs: a key file (0600) opens the repository without the
# password's Argon2id derivation, which is never weakened (about 1.3 s of
# a small incremental otherwise). BENCH_PASSWORD=1 times it with the
# password instead.
if [ -z "${BENCH_PASSWORD:-}" ]; then
	"$BW" repo key add --new-key-file "$W/bw.key" >/dev/null
	export BLOCKWISE_KEY_FILE=$W/bw.key
	unset BLOCKWISE_PASSWORD
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b-a}'; }
dirbytes() { du -sb "$1" | cut -f1; }

# 1% of the 64 KiB blocks, rewritten in the guest (spread over the disk).
BLOCKS=$(( $(qemu-img info --output=json "$W/disk.qcow2" | awk -F: '/"virtual-size"/ {gsub(/[ ,]/,"",$2); print $2}') / 65536 ))
N=$(( BLOCKS / 100 ))
CHANGED=$(( N * 65536 ))
change() { # DOMAIN
	"$W/guest" run "$W/$1-shell.sock" "i=0; while [ \$i -lt $N ]; do dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=\$(( (\$i * 7919) % $BLOCKS )) conv=notrunc 2>/dev/null; i=\$((i+1)); done; sync"
}

# blockwise's side: the same guest and image under QEMU directly, through
# its QMP source (here libvirt 9.0 without cgroups in a private namespace
# sometimes leaves a pull-mode backup job stuck after its abort: the QEMU
# job concluded, libvirt's event handler blocked; virtnbdbackup hits it
# on every run, see below).
cp --sparse=always "$W/disk.qcow2" "$W/bw.qcow2"
# A small second drive with a mounted ext4, so that the freeze has a file
# system to freeze and its time is measured (only vda is backed up).
qemu-img create -q -f qcow2 "$W/bw-fs.qcow2" 64M
qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -nographic -no-reboot -machine q35 -m 256 \
	-kernel "$KERNEL" -initrd "$W/initrd.cpio" -append "$CMDLINE" -serial "file:$W/bw-console.log" \
	-qmp "unix:$W/bw-qmp.sock,server=on,wait=off" -device virtio-serial-pci,id=vser \
	-chardev "socket,id=shell,path=$W/bw-shell.sock,server=on,wait=off" \
	-device virtserialport,bus=vser.0,chardev=shell,name=org.blockwise.shell \
	-chardev "socket,id=qga,path=$W/bw-qga.sock,server=on,wait=off" \
	-device virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0 \
	-blockdev "{\"driver\":\"qcow2\",\"node-name\":\"vda\",\"file\":{\"driver\":\"file\",\"filename\":\"$W/bw.qcow2\"}}" \
	-device virtio-blk-pci,drive=vda \
	-blockdev "{\"driver\":\"qcow2\",\"node-name\":\"fs\",\"file\":{\"driver\":\"file\",\"filename\":\"$W/bw-fs.qcow2\"}}" \
	-device virtio-blk-pci,drive=fs >"$W/bw-qemu.log" 2>&1 &
QEMU_PID=$!
"$W/guest" run "$W/bw-shell.sock" "mkfs.ext4 -q -F /dev/vdb && mkdir -p /mnt/fs && mount -t ext4 /dev/vdb /mnt/fs"
SRC="qemu+unix://$W/bw-qmp.sock?drive=vda&agent=$W/bw-qga.sock&name=bw"
t0=$(now); "$BW" backup "$SRC" --scratch-dir "$W/scratch" --json ${BW_FLAGS:-} >"$W/bw-full.json"; t1=$(now)
BW_FULL=$(secs "$t0" "$t1")
BW_REPO0=$(dirbytes "$W/bw-repo")
change bw
t0=$(now); "$BW" backup "$SRC" --scratch-dir "$W/scratch" --json ${BW_FLAGS:-} >"$W/bw-inc.json"; t1=$(now)
BW_INC=$(secs "$t0" "$t1")
BW_GROWTH=$(( $(dirbytes "$W/bw-repo") - BW_REPO0 ))
kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=

# The guest's shell loop reopens its virtio-serial port about ten times
# a second while no host end is connected; each reopen is a
# VSERPORT_CHANGE event that libvirt 9.0 queues behind the backup job,
# and the job's "concluded" event then waits forever behind them (see
# docs/performance.md). So an idle host end stays connected while
# virtnbdbackup runs (hold/release), outside the timings.
HOLD_PID=
hold() { nc -d -U "$W/vnb-shell.sock" >/dev/null 2>&1 & HOLD_PID=$!; sleep 0.5; }
release() { [ -n "$HOLD_PID" ] && kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null || true; HOLD_PID=; }
start_domain vnb
hold
t0=$(now); virtnbdbackup -U "$URI" -d vnb -l full -o "$W/vnb" -S "$W/scratch" >"$W/vnb-full.log" 2>&1 || { tail -30 "$W/vnb-full.log" >&2; exit 1; }; t1=$(now)
VNB_FULL=$(secs "$t0" "$t1")
VNB_REPO0=$(dirbytes "$W/vnb")
for _ in $(seq 100); do virsh -c "$URI" domjobinfo vnb 2>/dev/null | grep -q 'Job type: *None' && break; sleep 0.2; done
release
change vnb
hold
# virtnbdbackup 1.9.15 logs "stopping backup task" but here leaves its
# pull-mode job running (domjobinfo: Backup, Unbounded), and then refuses
# its incremental ("active backup operation"): ask libvirt to end the job
# (outside the timings) and wait up to a minute for it.
for _ in $(seq 300); do
	virsh -c "$URI" domjobinfo vnb 2>/dev/null | grep -q 'Job type: *None' && break
	virsh -c "$URI" domjobabort vnb >/dev/null 2>&1 || true
	sleep 0.2
done
t0=$(now)
if virtnbdbackup -U "$URI" -d vnb -l inc -o "$W/vnb" -S "$W/scratch" >"$W/vnb-inc.log" 2>&1; then
	t1=$(now); VNB_INC=$(secs "$t0" "$t1"); VNB_GROWTH=$(( $(dirbytes "$W/vnb") - VNB_REPO0 ))
else
	echo "virtnbdbackup's incremental failed:" >&2; grep -E "ERROR|CRITICAL" "$W/vnb-inc.log" >&2 || tail -5 "$W/vnb-inc.log" >&2
	VNB_INC=failed; VNB_GROWTH=0
fi
release


field() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" "$2" | head -1 | tr -d '"'; }
BW_READ=$(field readBytes "$W/bw-inc.json")
BW_MODE=$(field mode "$W/bw-inc.json")
[ "$BW_MODE" = incremental ] || { echo "blockwise's second backup was $BW_MODE" >&2; cat "$W/bw-inc.json" >&2; exit 1; }
FROZEN=$(sed -n 's/.*frozen by the guest agent for \([0-9.a-zµ]*\).*/\1/p' "$W/bw-inc.json" | head -1)

echo "VM drive $SIZE qcow2, half data; changed $N blocks of 64 KiB = $CHANGED bytes"
printf '%-28s %12s %14s\n' "" blockwise virtnbdbackup
printf '%-28s %12s %14s\n' "full backup (s)" "$BW_FULL" "$VNB_FULL"
printf '%-28s %12s %14s\n' "incremental backup (s)" "$BW_INC" "$VNB_INC"
printf '%-28s %12s %14s\n' "incremental bytes read" "$BW_READ" "-"
printf '%-28s %12s %14s\n' "repository growth (bytes)" "$BW_GROWTH" "$VNB_GROWTH"
printf '%-28s %12s %14s\n' "growth / changed bytes" "$(awk -v g="$BW_GROWTH" -v c="$CHANGED" 'BEGIN{printf "%.2f", g/c}')" "$(awk -v g="$VNB_GROWTH" -v c="$CHANGED" 'BEGIN{printf "%.2f", g/c}')"
printf '%-28s %12s\n' "guest frozen (incremental)" "${FROZEN:-?}"
[ "$VNB_INC" != failed ] && echo "incremental speed-up: $(awk -v a="$VNB_INC" -v b="$BW_INC" 'BEGIN{printf "%.2fx", a/b}')"
echo "full backup ratio (virtnbdbackup / blockwise): $(awk -v a="$VNB_FULL" -v b="$BW_FULL" 'BEGIN{printf "%.2fx", a/b}')"

#!/usr/bin/env bash
# The boot-time part of bench/recovery.sh (MODE=boot bench/recovery.sh
# [SIZE]; see there): the test guest booted from `serve-point --writable`
# against booted from the restored raw image on local disk.
set -euo pipefail
SIZE=${1:-2G}
BOOTSET=${BOOTSET:-128M} REPS=${REPS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwboot.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT INT TERM
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench BLOCKWISE_CACHE_DIR=$W/cache
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/guest" ./bench/guest)
"$W/guest" initramfs "$W/initrd.cpio"
{ read -r KERNEL; read -r CMDLINE; } < <("$W/guest" kernel)
# CMDLINE has no_timer_check (testvm.KernelCmdline): under load TCG's
# timer can miss the kernel's IO-APIC check and the boot panics.

# The root filesystem: the boot set and filler.
python3 - "$W/src" "$BOOTSET" <<'PY'
import os, sys, random
root, total = sys.argv[1], sys.argv[2]
total = int(total[:-1]) << {"K": 10, "M": 20, "G": 30}[total[-1]] if total[-1] in "KMG" else int(total)
rng = random.Random(1)
i = 0
while total > 0:
    d = "%s/boot/d%02d" % (root, i // 100)
    os.makedirs(d, exist_ok=True)
    n = min(total, rng.randint(8 << 10, 256 << 10))
    with open("%s/f%04d" % (d, i), "wb") as f:
        f.write(os.urandom(n))
    total, i = total - n, i + 1
os.makedirs(root + "/var/log")
with open(root + "/filler", "wb") as f:
    for _ in range(4):
        f.write(os.urandom(64 << 20))
PY
truncate -s "$SIZE" "$W/root.raw"
mkfs.ext4 -q -F -d "$W/src" "$W/root.raw"
. "$ROOT/bench/recovery-lib.sh"
point_from_image "$W/root.raw" root
"$BW" restore latest --to "$W/restored.raw" >/dev/null

now() { date +%s.%N; }
since() { awk "BEGIN {printf \"%.3f\", $(now) - $1}"; }
# cold FILE...: drop the files' pages from the host's page cache.
cold() { find "$@" -type f -exec dd if={} of=/dev/null iflag=nocache count=0 status=none \; ; }
MARK='mount /dev/vda /mnt && find /mnt/boot -type f | xargs cat > /dev/null && dd if=/dev/urandom of=/mnt/var/log/boot.log bs=64k count=16 2>/dev/null && sync && umount /mnt && echo booted'
# boot DRIVE: boots the guest with DRIVE (a -drive value) as vda and
# prints the seconds from $START to the guest's marker.
boot() {
	rm -f "$W/shell.sock"
	qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -nographic -no-reboot \
		-machine q35 -cpu max -m 256 -smp 1 -kernel "$KERNEL" -initrd "$W/initrd.cpio" -append "$CMDLINE" \
		-serial "file:$W/console.log" -device virtio-serial-pci,id=vser \
		-chardev "socket,id=shell,path=$W/shell.sock,server=on,wait=off" \
		-device virtserialport,bus=vser.0,chardev=shell,name=org.blockwise.shell \
		-drive "$1" & local q=$!
	local out; out=$(timeout "${BOOT_TIMEOUT:-900}" "$W/guest" run "$W/shell.sock" "$MARK" 2>&1) || true
	local t; t=$(since "$START")
	kill "$q"; wait "$q" 2>/dev/null || true
	if [ "$(echo "$out" | tail -1)" != booted ]; then
		printf 'boot with %s failed: %s\nconsole:\n%s\n' "$1" "$out" "$(tail -20 "$W/console.log")" >&2
		exit 1
	fi
	echo "$t"
}
# point: serve-point --writable started, then the boot; both timed.
point() {
	rm -rf "$W/ov" "$W/point.sock" "$W/sp.out"
	cold "$W/repo"
	START=$(now)
	"$BW" serve-point latest --writable --overlay "$W/ov" --socket "$W/point.sock" > "$W/sp.out" 2>"$W/sp.log" & local sp=$!
	for _ in $(seq 600); do grep -q "file.export=" "$W/sp.out" 2>/dev/null && break; sleep 0.02; done
	local name; name=$(sed -n 's/.*file.export=\([^,]*\),.*/\1/p' "$W/sp.out" | head -1)
	boot "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$W/point.sock,file.export=$name,cache=none,if=virtio"
	kill "$sp"; wait "$sp" 2>/dev/null || true
}
# local: the restored raw image.
local_raw() {
	cold "$W/restored.raw"
	START=$(now)
	boot "file=$W/restored.raw,format=raw,if=virtio"
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[int((NR+1)/2)], a[1]}'; }
P=() L=()
for _ in $(seq "$REPS"); do # interleaved, so load changes hit both alike
	P+=("$(point)")
	L+=("$(local_raw)")
	echo "boot: point ${P[-1]} s, local ${L[-1]} s" >&2
done
read -r PMED PMIN < <(printf '%s\n' "${P[@]}" | stats)
read -r LMED LMIN < <(printf '%s\n' "${L[@]}" | stats)
printf "guest boot to marker: root ext4 %s, boot set %s, %s reps, TCG 1 vCPU, %s host cores\n" "$SIZE" "$BOOTSET" "$REPS" "$(nproc)"
printf "%-46s %s\n" "from serve-point --writable (s):" "${P[*]}"
printf "%-46s %s\n" "from the restored raw image, local disk (s):" "${L[*]}"
printf "median %.3f vs %.3f s, fastest %.3f vs %.3f s\n" "$PMED" "$LMED" "$PMIN" "$LMIN"
printf "boot from point / from local raw: %.2fx median, %.2fx fastest (goal <= 1.5x)\n" \
	"$(awk "BEGIN {print $PMED / $LMED}")" "$(awk "BEGIN {print $PMIN / $LMIN}")"

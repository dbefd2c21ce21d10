#!/usr/bin/env bash
# bench/recovery.sh [SIZE]   (default 4G)
#
# File-level restore against the user's alternative (restore the whole
# image, loop-mount it, copy): time to first byte and total time for one
# large file (BIG, default 100M) and for a tree of FILES small files
# (default 10000, 1-8 KiB each) from an ext4 point of SIZE on a GPT disk,
# FILL (default 512M) of other data beside them. Routes measured:
#   dump    blockwise dump POINT PATH (the file; the tree as tar)
#   restore blockwise restore POINT --include PATH --to DIR
#   mount   blockwise mount POINT DIR, then cp / cp -a
#   image   blockwise restore POINT --to disk.raw, mount -o loop, cp
# The repository is local, or with S3=1 on versitygw on 127.0.0.1
# (scripts/versitygw.sh installs it). PROFILE=FILE writes a CPU profile of
# one dump of the big file. BENCH_DIR picks the scratch
# directory (default: under /var/tmp). Needs root (loop mounts, FUSE).
# Each route runs REPS times (default 3) and the fastest run is shown: the
# machine may be shared.
#
# MODE=boot bench/recovery.sh [SIZE]   (default 2G): instant recovery's
# guest boot time. The test guest (internal/testvm's kernel and
# initramfs, TCG, 1 vCPU) boots with a root ext4 of SIZE as vda, from
# (a) `serve-point --writable` (process start included) and (b) the
# point restored to a raw file on local disk (QEMU's default cache). The
# kernel gets no_timer_check (testvm.KernelCmdline): under load TCG's
# timer failed its IO-APIC check and the boot panicked. "Booted" is a
# guest-side marker after what a boot does on its root disk: mount it
# read-write, read the boot set (BOOTSET, default 128M in 2,000 files of
# 8-256 KiB, as binaries and libraries), write a 1 MiB log and sync. The
# raw file's and the repository's pages are dropped from the host's
# cache before each boot (fadvise DONTNEED), so both start cold. REPS
# boots each (default 5); median and fastest printed, and the ratio.
set -euo pipefail
if [ "${MODE:-files}" = boot ]; then
	SIZE=${1:-2G}
	exec bash "$(dirname "$0")/recovery-boot.sh" "$SIZE"
fi
SIZE=${1:-4G}
BIG=${BIG:-100M} FILES=${FILES:-10000} FILL=${FILL:-512M} REPS=${REPS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwrecovery.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	umount "$W/loop" "$W/fuse" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT INT TERM
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench BLOCKWISE_CACHE_DIR=$W/cache
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise)
if [ "${S3:-}" = 1 ]; then
	"$ROOT/scripts/versitygw.sh" >/dev/null
	GW=$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	mkdir -p "$W/s3/bench"
	export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key
	"$GW" --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --port "127.0.0.1:$PORT" --quiet --keep-alive posix "$W/s3" & PIDS+=($!)
	for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
	BLOCKWISE_REPO=s3:http://127.0.0.1:$PORT/bench/repo
fi

# The guest's filesystem: the big file, the tree, filler.
python3 - "$W/src" "$BIG" "$FILES" "$FILL" <<'PY'
import os, sys, random
root, big, files, fill = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def size(s):
    return int(s[:-1]) << {"K": 10, "M": 20, "G": 30}[s[-1]] if s[-1] in "KMG" else int(s)
os.makedirs(root + "/tree")
with open(root + "/big.bin", "wb") as f:
    f.write(os.urandom(size(big)))
rng = random.Random(1)
for i in range(files):
    d = "%s/tree/d%03d" % (root, i // 100)
    os.makedirs(d, exist_ok=True)
    with open("%s/f%05d" % (d, i), "wb") as f:
        f.write(os.urandom(rng.randint(1024, 8192)))
left, i = size(fill), 0
os.makedirs(root + "/filler")
while left > 0:
    n = min(left, 64 << 20)
    with open("%s/filler/%d" % (root, i), "wb") as f:
        f.write(os.urandom(n))
    left, i = left - n, i + 1
PY
truncate -s "$SIZE" "$W/disk.raw"
printf 'label: gpt\nstart=1MiB, type=L\n' | sfdisk -q "$W/disk.raw"
BYTES=$(stat -c %s "$W/disk.raw")
mkfs.ext4 -q -F -E offset=1048576 -d "$W/src" "$W/disk.raw" $(( (BYTES - (2 << 20)) / 1024 ))k

mkdir -p "$W/loop" "$W/fuse"
. "$ROOT/bench/recovery-lib.sh"
point_from_image "$W/disk.raw" bench

# ttfb CMD... : seconds to the first byte on stdout, and to the end.
ttfb() {
	python3 - "$@" <<'PY'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
first = p.stdout.read(1)
t1 = time.monotonic()
n = len(first)
while True:
    b = p.stdout.read(1 << 20)
    if not b:
        break
    n += len(b)
if p.wait() != 0:
    sys.exit("failed: " + " ".join(sys.argv[1:]))
print("%.3f %.3f %d" % (t1 - t0, time.monotonic() - t0, n))
PY
}
# best CMD...: the fastest of REPS runs of ttfb (by total time).
best() {
	local out=
	for _ in $(seq "$REPS"); do
		local r; r=$(ttfb "$@")
		if [ -z "$out" ] || awk "BEGIN {exit !(${r#* } + 0 < ${out#* } + 0)}" </dev/null; then out=$r; fi
	done
	echo "$out"
}
# besttime CMD...: the fastest of REPS runs of CMD, in seconds; PRE runs
# before each (not timed).
besttime() {
	local b=
	for _ in $(seq "$REPS"); do
		[ -n "${PRE:-}" ] && eval "$PRE"
		local s; s=$(now); "$@" >/dev/null; local t; t=$(since "$s")
		if [ -z "$b" ] || awk "BEGIN {exit !($t < $b)}"; then b=$t; fi
	done
	echo "$b"
}
now() { date +%s.%N; }
since() { awk "BEGIN {printf \"%.3f\", $(now) - $1}"; }
mib() { awk "BEGIN {printf \"%.1f\", $1 / 1048576 / $2}"; }

printf "point: %s ext4 on GPT, %s file + %s files of 1-8 KiB + %s filler; %s cores; repository %s\n" \
	"$SIZE" "$BIG" "$FILES" "$FILL" "$(nproc)" "$( [ "${S3:-}" = 1 ] && echo "S3 (versitygw, 127.0.0.1)" || echo local)"
printf "%-44s %10s %10s %10s\n" "" "first byte" "total (s)" "MiB/s"

# dump: the file, and the tree as a tar stream.
read -r f t n < <(best "$BW" dump latest /part1/big.bin)
printf "%-44s %10s %10s %10s\n" "dump big file" "$f" "$t" "$(mib "$n" "$t")"
DUMP_BIG=$t DUMP_BIG_FB=$f
read -r f t n < <(best "$BW" dump latest /part1/tree)
printf "%-44s %10s %10s %10s\n" "dump tree (tar)" "$f" "$t" "$(mib "$n" "$t")"
DUMP_TREE=$t DUMP_TREE_FB=$f

# restore --include
t=$(PRE='rm -rf "$W/r1"' besttime "$BW" restore latest --include /part1/big.bin --to "$W/r1")
printf "%-44s %10s %10s\n" "restore --include big file" "-" "$t"
t=$(PRE='rm -rf "$W/r2"' besttime "$BW" restore latest --include /part1/tree --to "$W/r2")
printf "%-44s %10s %10s\n" "restore --include tree" "-" "$t"
REST_TREE=$t
rm -rf "$W/r1" "$W/r2"

# mount (FUSE)
s=$(now)
"$BW" mount latest "$W/fuse" > "$W/mount.out" & MPID=$!
for _ in $(seq 300); do grep -q mounted "$W/mount.out" 2>/dev/null && break; sleep 0.05; done
read -r f t n < <(ttfb cat "$W/fuse/part1/big.bin")
printf "%-44s %10s %10s\n" "mount + cat big file" "$(awk "BEGIN {printf \"%.3f\", $(since "$s") - $t + $f}")" "$(since "$s")"
s2=$(now); cp -a "$W/fuse/part1/tree" "$W/m2"; t=$(since "$s2")
printf "%-44s %10s %10s\n" "cp -a tree from the mount" "-" "$t"
kill -TERM $MPID; wait $MPID || true
rm -rf "$W/m2"

# The whole image: restore, loop-mount, copy (the fastest of REPS).
IMG_READY= IMG_BIG= IMG_FB= IMG_TREE=
for _ in $(seq "$REPS"); do
	rm -rf "$W/img.raw" "$W/i2"
	s=$(now); "$BW" restore latest --to "$W/img.raw" >/dev/null
	mount -o ro,loop,offset=1048576 "$W/img.raw" "$W/loop"
	ready=$(since "$s")
	read -r f t n < <(ttfb cat "$W/loop/big.bin")
	big=$(awk "BEGIN {printf \"%.3f\", $ready + $t}")
	s2=$(now); cp -a "$W/loop/tree" "$W/i2"; tt=$(since "$s2")
	tree=$(awk "BEGIN {printf \"%.3f\", $ready + $tt}")
	umount "$W/loop"
	if [ -z "$IMG_BIG" ] || awk "BEGIN {exit !($big < $IMG_BIG)}"; then IMG_BIG=$big IMG_READY=$ready IMG_FB=$(awk "BEGIN {printf \"%.3f\", $ready + $f}"); fi
	if [ -z "$IMG_TREE" ] || awk "BEGIN {exit !($tree < $IMG_TREE)}"; then IMG_TREE=$tree; fi
done
printf "%-44s %10s %10s\n" "image: restore + loop mount + cat big file" "$IMG_FB" "$IMG_BIG"
printf "%-44s %10s %10s\n" "image: restore + loop mount + cp -a tree" "-" "$IMG_TREE"
# CPU seconds (user+sys) per route, which a shared machine's load does
# not inflate as it does wall time.
cpu() { /usr/bin/time -f "%U %S" -o "$W/cpu" "$@" >/dev/null; awk '{printf "%.2f", $1 + $2}' "$W/cpu"; }
rm -rf "$W/c1" "$W/img.raw" "$W/i3"
C_DUMP=$(cpu "$BW" dump latest /part1/big.bin)
# PROFILE=FILE: a CPU profile of one dump of the big file (go tool pprof -top FILE).
if [ -n "${PROFILE:-}" ]; then BLOCKWISE_CPUPROFILE=$PROFILE "$BW" dump latest /part1/big.bin >/dev/null; fi
C_TREE=$(cpu "$BW" restore latest --include /part1/tree --to "$W/c1")
C_IMG=$(cpu "$BW" restore latest --to "$W/img.raw")
mount -o ro,loop,offset=1048576 "$W/img.raw" "$W/loop"
C_CAT=$(cpu cat "$W/loop/big.bin")
C_CP=$(cpu cp -a "$W/loop/tree" "$W/i3")
umount "$W/loop"
printf "CPU seconds: dump big file %s, restore --include tree %s; image restore %s (+ cat %s, + cp -a tree %s)\n" \
	"$C_DUMP" "$C_TREE" "$C_IMG" "$C_CAT" "$C_CP"
echo
printf "big file: whole-image route / dump = %.1fx; first byte %.3f s vs %.3f s\n" \
	"$(awk "BEGIN {print $IMG_BIG / $DUMP_BIG}")" "$DUMP_BIG_FB" "$(awk "BEGIN {print $IMG_READY + 0}")"
printf "tree: whole-image route / restore --include = %.1fx, / dump as tar = %.1fx\n" \
	"$(awk "BEGIN {print $IMG_TREE / $REST_TREE}")" "$(awk "BEGIN {print $IMG_TREE / $DUMP_TREE}")"

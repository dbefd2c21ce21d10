#!/usr/bin/env bash
# bench/servepoint.sh [SIZE]   (default 1G)
#
# Instant recovery: reading a restore point served by `blockwise
# serve-point` (chunks loaded from the encrypted, compressed repository and
# verified per request) against qemu-nbd serving the same image as a raw
# file from the page cache. Small sequential reads as a booting VM does
# (qemu-img bench, 4 KiB, queue depth 1 and 16), and a whole copy with
# nbdcopy. BENCH_DIR picks the scratch directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-1G}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in qemu-img:qemu-utils qemu-nbd:qemu-utils nbdcopy:libnbd-bin; do
	command -v "${t%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${t#*:}" >/dev/null
done
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwpoint.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen)
"$W/imagegen" gen -size "$SIZE" -out "$W/disk.raw" >/dev/null
mkdir -p "$BLOCKWISE_DATASTORE"
"$BW" serve --nbd-tcp "" 2>"$W/serve.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
"$BW" disk create bench --size "$(stat -c %s "$W/disk.raw")" >/dev/null
qemu-img convert -n --target-is-zero -f raw -O raw "$W/disk.raw" "nbd+unix:///bench?socket=$BLOCKWISE_DATASTORE/nbd.sock"
"$BW" repo init >/dev/null
"$BW" backup bench >/dev/null
"$BW" serve-point latest --socket "$W/point.sock" >/dev/null 2>"$W/point.log" & PIDS+=($!)
qemu-nbd -r -f raw -t -k "$W/qnbd.sock" "$W/disk.raw" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$W/point.sock" ] && [ -S "$W/qnbd.sock" ] && break; sleep 0.1; done
cat "$W/disk.raw" >/dev/null
POINT="nbd+unix:///?socket=$W/point.sock" QNBD="nbd+unix:///?socket=$W/qnbd.sock"
qemu-img compare -f raw -F raw "$POINT" "$W/disk.raw" >/dev/null

bench() { # uri -> seconds
	local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; awk "BEGIN {print $(date +%s.%N) - $s}"
}
qb() { qemu-img bench -f raw -c 32768 -s 4096 -d "$1" "$2"; }
nc() { nbdcopy "$1" null:; }
row() { # label, command with URI last replaced
	local label=$1; shift
	local a b
	a=$(bench "$@" "$QNBD"); b=$(bench "$@" "$POINT")
	printf "%-34s %10.2f %12.2f %8.2fx\n" "$label" "$a" "$b" "$(awk "BEGIN {print $b / $a}")"
}
echo "image $(stat -c %s "$W/disk.raw") bytes ($SIZE); $(nproc) cores; $(qemu-nbd --version | head -1)"
printf "%-34s %10s %12s %9s\n" "" "qemu-nbd" "serve-point" "time ratio"
row "4 KiB reads x32768, depth 1 (s)" qb 1
row "4 KiB reads x32768, depth 16 (s)" qb 16
row "nbdcopy of the whole image (s)" nc

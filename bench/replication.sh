#!/usr/bin/env bash
# bench/replication.sh [SIZE]   (default 4G; e.g. 1G)
#
# Replication (issue 22) between two `blockwise serve` hosts on this
# machine, the target's API on TCP with TLS (a self-signed certificate):
#  1. initial sync of an OS-like image (bench/imagegen: ~35% holes);
#  2. one cycle after 1% of the 64 KiB blocks changed: time, changed
#     bytes and bytes on the wire (request bodies, zstd), against
#     `rsync --inplace --no-whole-file` of the raw image between two
#     directories (bytes sent from its --stats) and a full `nbdcopy` of
#     the snapshot into a disk of the target host; the target's point is
#     checked with qemu-img compare;
#  3. a 15 s RPO while the source writes 20 MB/s of random 64 KiB blocks
#     (bench/replwriter) for RPO_SECONDS (default 60): the oldest
#     last-point age seen, RPO violations, and the writes' p99 latency
#     against the same writer on an unreplicated disk.
# BENCH_DIR picks the scratch directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-4G}
RPO_SECONDS=${RPO_SECONDS:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}
need rsync rsync
need qemu-img qemu-utils
need nbdcopy libnbd-bin
need openssl openssl
need jq jq
[ -x /usr/bin/time ] || need /usr/bin/time time

W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwrepl.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen &&
	go build -o "$W/replwriter" ./bench/replwriter)
A=$W/a B=$W/b
mkdir -p "$A" "$B"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BW" --datastore "$A" serve 2>"$W/a.log" & PIDS+=($!)
"$BW" --datastore "$B" serve --api-tcp 127.0.0.1:$PORT --api-tls-cert "$W/cert.pem" --api-tls-key "$W/key.pem" 2>"$W/b.log" & PIDS+=($!)
for s in "$A" "$B"; do for _ in $(seq 100); do [ -S "$s/api.sock" ] && break; sleep 0.1; done; done
a() { "$BW" --datastore "$A" "$@"; }
b() { "$BW" --datastore "$B" "$@"; }
uri() { echo "nbd+unix:///$2?socket=$1/nbd.sock"; }
secs() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }

echo "== image: $SIZE (imagegen)"
"$W/imagegen" gen -size "$SIZE" -out "$W/disk.raw"
cp --sparse=always "$W/disk.raw" "$W/old.raw" # rsync's destination: the image before the change
a disk create bench --size "$SIZE" --granularity 64K >/dev/null
qemu-img convert -n -f raw -O raw "$W/disk.raw" "$(uri "$A" bench)"
TOKEN=$(b token create siteA --scope replication)

echo "== initial sync"
a replication create g --disk bench --target "https://127.0.0.1:$PORT" --target-token "$TOKEN" \
	--target-ca "$W/cert.pem" --rpo 15s >/dev/null
until a replication show g --json | jq -e '.lastPoint' >/dev/null; do sleep 0.2; done
a replication pause g >/dev/null
a replication show g --json | jq -r '.cycles | map(select(.full)) | first | "initial sync: \(.seconds|.*100|round/100) s, \(.bytes) bytes read, \(.wireBytes) on the wire"'

echo "== 1% of the 64 KiB blocks changed"
CHANGED=$("$W/imagegen" mutate -file "$W/disk.raw" -uri "$(uri "$A" bench)" -frac 0.01)
/usr/bin/time -v -o "$W/cycle.tv" "$BW" --datastore "$A" replication sync g >/dev/null
CYC=$(a replication show g --json)
SEQ=$(jq -r .lastPoint.seq <<<"$CYC")
CYC_S=$(secs "$W/cycle.tv") CYC_B=$(jq -r .lastCycle.bytes <<<"$CYC") CYC_W=$(jq -r .lastCycle.wireBytes <<<"$CYC")
qemu-img compare -f raw -F raw "$(uri "$A" "bench@rep-g-$SEQ")" "$(uri "$B" "bench@rp-$SEQ")" >/dev/null
echo "point $SEQ identical to the source snapshot (qemu-img compare)"
sync; cat "$W/disk.raw" "$W/old.raw" >/dev/null
/usr/bin/time -v -o "$W/rsync.tv" rsync --inplace --no-whole-file --stats "$W/disk.raw" "$W/old.raw" >"$W/rsync.out"
RS_S=$(secs "$W/rsync.tv") RS_W=$(awk -F': ' '/Total bytes sent/ {gsub(/,/,"",$2); print $2}' "$W/rsync.out")
b disk create copy --size "$SIZE" >/dev/null
/usr/bin/time -v -o "$W/nbdcopy.tv" nbdcopy "$(uri "$A" "bench@rep-g-$SEQ")" "$(uri "$B" copy)"
NC_S=$(secs "$W/nbdcopy.tv") NC_W=$(b disk list --json | jq -r '.[] | select(.name=="copy") | .allocated // 0')
printf '%-22s %10s %14s %14s\n' "" seconds "changed bytes" "wire bytes"
printf "%-22s %10s %14s %14s\n" "blockwise cycle" "$CYC_S" "$CYC_B" "$CYC_W"
echo "(cycle as the CLI waited for it; the cycle itself: $(jq -r .lastCycle.seconds <<<"$CYC") s)"
printf '%-22s %10s %14s %14s\n' "rsync --inplace" "$RS_S" "$CHANGED" "$RS_W"
printf '%-22s %10s %14s %14s\n' "nbdcopy (full)" "$NC_S" "-" "$NC_W"
awk -v c="$CYC_S" -v r="$RS_S" -v n="$NC_S" -v w="$CYC_W" -v ch="$CHANGED" 'BEGIN {
	printf "cycle vs rsync: %.1fx faster; vs nbdcopy: %.1fx faster; wire/changed: %.3f\n", r/c, n/c, w/ch }'

echo "== 15 s RPO while writing 20 MB/s for ${RPO_SECONDS}s"
a disk create plain --size "$SIZE" >/dev/null
BASE=$("$W/replwriter" -uri "$(uri "$A" plain)" -rate 20000000 -dur "${RPO_SECONDS}s")
a replication sync g >/dev/null
a replication resume g >/dev/null
V0=$(a replication show g --json | jq '.events | map(select(test("violated"))) | length')
"$W/replwriter" -uri "$(uri "$A" bench)" -rate 20000000 -dur "${RPO_SECONDS}s" >"$W/repl.json" & WP=$!
MAXAGE=0
while kill -0 $WP 2>/dev/null; do
	AGE=$(a replication show g --json | jq '.lastPointAge // 0')
	MAXAGE=$(awk -v a="$AGE" -v m="$MAXAGE" 'BEGIN { print (a > m) ? a : m }')
	sleep 1
done
wait $WP
REPL=$(cat "$W/repl.json")
END=$(a replication show g --json)
V1=$(jq '.events | map(select(test("violated"))) | length' <<<"$END")
echo "unreplicated writes: $BASE"
echo "replicated writes:   $REPL"
echo "last cycle: $(jq -c .lastCycle <<<"$END")"
awk -v m="$MAXAGE" -v v=$((V1 - V0)) -v b="$(jq .p99ms <<<"$BASE")" -v r="$(jq .p99ms <<<"$REPL")" 'BEGIN {
	printf "oldest last point seen: %.1f s (RPO 15 s); RPO violations: %d; write p99 %.2f ms vs %.2f ms unreplicated: %.2fx\n", m, v, r, b, r/b }'

#!/usr/bin/env bash
# bench/vaai_caw.sh: compare-and-write (ATS) latency through the host API
# while another client writes 1 MiB blocks at full speed over NBD to the
# same disk (issue 17; goal: p99 <= 2 ms).
#
#   A 4 GiB disk; `qemu-img bench -w -s 1M -d DEPTH` writes [0, 4095 MiB)
#   over and over through the unix NBD socket; bench/cawprobe renews a
#   sector lease at 4095 MiB + 512 N times (one compare-and-write each,
#   GAP apart) and prints latency percentiles. The probe runs once with
#   the disk idle and once under the writer; the writer's rate is read
#   from /metrics over the probe's window.
#
# Env: N (compare-and-writes, default 2000), GAP (1ms), DEPTH (16),
# KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
GAP=${GAP:-1ms}
DEPTH=${DEPTH:-16}
for c in qemu-img curl go jq awk; do
	command -v $c >/dev/null || { echo "vaai_caw.sh: $c not installed" >&2; exit 1; }
done

W=$(mktemp -d /tmp/bw-cawbench.XXXXXX)
PIDS=()
cleanup() {
	touch "$W/stop"
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W/bin" "$W/ds"
go build -o "$W/bin/blockwise" ./cmd/blockwise
go build -o "$W/bin/cawprobe" ./bench/cawprobe
BW() { "$W/bin/blockwise" --datastore "$W/ds" "$@"; }

"$W/bin/blockwise" --datastore "$W/ds" serve >"$W/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$W/ds/api.sock" ] && break; sleep 0.1; done
BW disk create vm --size 4G >/dev/null
URI=$(BW export vm)
API="unix://$W/ds/api.sock"
LEASE=$((4095 << 20 | 512))

written() { curl -s --unix-socket "$W/ds/api.sock" http://x/metrics | awk '$1=="blockwise_disk_written_bytes_total{disk=\"vm\"}"{print $2}'; }
probe() { "$W/bin/cawprobe" -api "$API" -disk vm -offset "$LEASE" -n "$N" -gap "$GAP"; }

echo "== idle disk"
IDLE=$(probe)
echo "$IDLE"

writer() {
	while [ ! -e "$W/stop" ]; do
		qemu-img bench -q -w -f raw -t none -s 1M -S 1M -c 4095 -d "$DEPTH" "$URI" >/dev/null 2>&1 || sleep 0.1
	done
}
writer &
PIDS+=($!)
sleep 3 # the writer at full speed
echo "== under 1 MiB writes at full speed (qemu-img bench, depth $DEPTH)"
B0=$(written); T0=$(date +%s.%N)
BUSY=$(probe)
B1=$(written); T1=$(date +%s.%N)
echo "$BUSY"
awk -v b0="$B0" -v b1="$B1" -v t0="$T0" -v t1="$T1" 'BEGIN{printf "writer: %.0f MiB/s of NBD writes during the probe\n", (b1-b0)/(t1-t0)/1048576}'
echo
printf "%-28s %8s %8s %8s %8s\n" "compare-and-write (API)" p50_ms p99_ms p999_ms max_ms
for row in "idle:$IDLE" "under-writes:$BUSY"; do
	name=${row%%:*}; js=${row#*:}
	printf "%-28s %8s %8s %8s %8s\n" "$name" "$(jq -r .p50_ms <<<"$js")" "$(jq -r .p99_ms <<<"$js")" "$(jq -r .p999_ms <<<"$js")" "$(jq -r .max_ms <<<"$js")"
done
echo "goal: p99 under writes <= 2 ms"

echo
echo "== in the engine (no HTTP): 4 goroutines writing 1 MiB, CAW every 200 us"
BLOCKWISE_LONG=1 go test -count=1 ./internal/disk/ -run TestCompareAndWriteLatency -v 2>&1 | grep -E 'CAW under|FAIL' | sed 's/^ *caw_latency_test.go:[0-9]*: //'
echo "(load average: $(cut -d' ' -f1-3 /proc/loadavg))"

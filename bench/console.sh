#!/usr/bin/env bash
# bench/console.sh [DISKS] [POINTS]   (default 1000 disks × 100 points)
#
# Server time of the web console's pages and data (issue 19): a datastore
# with DISKS disks and a job history of DISKS×POINTS backups (made by
# bench/consolegen) is served by a real `blockwise serve`; each page and
# data request is timed 50 times with curl over the API's unix socket
# (time to the last byte), p50 and p95 reported; then the host's RSS
# (VmRSS now, VmHWM peak) with that history loaded. Goal: p95 <= 200 ms,
# RSS <= 256 MiB. BENCH_DIR picks the scratch directory.
# The replication page (/console/api/replication) is timed with no group
# (consolegen makes none); the clone page reads the disks' names, a disk's
# snapshots. The file browser reads a repository and
# is not timed here (bench/recovery.sh times file restore).
set -euo pipefail
DISKS=${1:-1000}
POINTS=${2:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwconsole.XXXXXX")
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$ROOT"
go build -o "$W/blockwise" ./cmd/blockwise
go build -o "$W/consolegen" ./bench/consolegen
DS="$W/ds"
t0=$(date +%s.%N)
"$W/consolegen" -datastore "$DS" -disks "$DISKS" -points "$POINTS"
echo "generated $DISKS disks, $((DISKS * POINTS)) backups in $(echo "$(date +%s.%N) - $t0" | bc) s ($(du -h "$DS/jobs.db" | cut -f1) jobs.db)"
t0=$(date +%s.%N)
"$W/blockwise" --datastore "$DS" serve 2>"$W/serve.log" &
PID=$!
SOCK="$DS/api.sock"
for _ in $(seq 200); do [ -S "$SOCK" ] && curl -s --unix-socket "$SOCK" -o /dev/null http://x/v1/host && break; sleep 0.1; done
echo "serve answering after $(echo "$(date +%s.%N) - $t0" | bc) s"
MID=$(printf 'd%04d' $((DISKS / 2)))
printf '%-34s %8s %8s %10s\n' request p50_ms p95_ms bytes
for path in / /console/static/app.js /console/api/overview "/console/api/grid?days=30" "/console/api/sources/$MID" \
	"/v1/jobs?limit=200" "/v1/jobs?source=$MID&limit=100" /v1/policies /metrics \
	/console/api/replication /console/api/disks "/v1/disks/$MID/snapshots"; do
	curl -s --unix-socket "$SOCK" -o /dev/null "http://x$path" # warm
	times=$(for _ in $(seq 50); do curl -s --unix-socket "$SOCK" -o /dev/null -w '%{time_total}\n' "http://x$path"; done | sort -n)
	size=$(curl -s --unix-socket "$SOCK" "http://x$path" | wc -c)
	p50=$(echo "$times" | sed -n '25p'); p95=$(echo "$times" | sed -n '48p')
	printf '%-34s %8.1f %8.1f %10d\n' "$path" "$(echo "$p50 * 1000" | bc)" "$(echo "$p95 * 1000" | bc)" "$size"
done
grep -E 'VmRSS|VmHWM|RssAnon|RssFile' /proc/$PID/status  # RssFile: the mapped jobs.db pages (bbolt)

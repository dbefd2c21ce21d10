#!/usr/bin/env bash
# bench/console.sh [DISKS] [POINTS]   (default 1000 disks × 100 points)
#
# Server time of the web console's pages and data (issue 19): a datastore
# with DISKS disks and a job history of DISKS×POINTS backups (made by
# bench/consolegen) is served by a real `blockwise serve`; each page and
# data request is timed 50 times with curl over the API's unix socket
# (time to the last byte), p50 and p95 reported, and the host's CPU time
# per request; then the host's RSS
# (VmRSS now, VmHWM peak) with that history loaded. Goal: p95 <= 200 ms,
# RSS <= 256 MiB. BENCH_DIR picks the scratch directory.
# The replication page (/console/api/replication) is timed with no group
# (consolegen makes none); the clone page reads the disks' names, a disk's
# snapshots. Then the file browser's requests: a disk "fs1" (ext4: a
# folder of FILES small files, an 8 MiB file) is backed up by a policy
# into a real repository (its key held by the host), and the browser's
# requests on that point are timed the same way: the root, the folder's
# listing, the big file's download, the folder as tar; then RSS again.
set -euo pipefail
DISKS=${1:-1000}
POINTS=${2:-100}
FILES=${FILES:-1000}
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
# timed LABEL PATH: PATH requested 50 times (after one to warm), p50 and
# p95 of curl's time to the last byte, and the answer's size.
# cpu_ms: the host's CPU time per request (user+system, from
# /proc/PID/stat in clock ticks), which other work on the machine does
# not inflate the way it does the wall times.
cputicks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
timed() {
	curl -s --unix-socket "$SOCK" -o /dev/null "http://x$2" # warm
	c0=$(cputicks)
	times=$(for _ in $(seq 50); do curl -s --unix-socket "$SOCK" -o /dev/null -w '%{time_total}\n' "http://x$2"; done | sort -n)
	cpu=$(echo "($(cputicks) - $c0) * 1000 / $(getconf CLK_TCK) / 50" | bc -l)
	size=$(curl -s --unix-socket "$SOCK" "http://x$2" | wc -c)
	p50=$(echo "$times" | sed -n '25p'); p95=$(echo "$times" | sed -n '48p')
	printf '%-40s %8.1f %8.1f %8.1f %10d\n' "$1" "$(echo "$p50 * 1000" | bc)" "$(echo "$p95 * 1000" | bc)" "$cpu" "$size"
}
echo "load average before the requests: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf '%-40s %8s %8s %8s %10s\n' request p50_ms p95_ms cpu_ms bytes
for path in / /console/static/app.js /console/api/overview "/console/api/grid?days=30" "/console/api/sources/$MID" \
	"/v1/jobs?limit=200" "/v1/jobs?source=$MID&limit=100" /v1/policies /metrics \
	/console/api/replication /console/api/disks "/v1/disks/$MID/snapshots"; do
	timed "$path" "$path"
done
grep -E 'VmRSS|VmHWM|RssAnon|RssFile' /proc/$PID/status  # RssFile: the mapped jobs.db pages (bbolt)

# The file browser: a point of a real ext4 disk in a real repository.
mkdir -p "$W/tree/many"
head -c 8M /dev/urandom >"$W/tree/big.bin"
for i in $(seq "$FILES"); do head -c $((1024 + i * 7 % 7168)) /dev/urandom >"$W/tree/many/f$i.txt"; done
mkfs.ext4 -q -F -d "$W/tree" "$W/fs.img" 64M >/dev/null
BLOCKWISE_DATASTORE=$DS "$W/blockwise" disk create fs1 --size 64M >/dev/null
qemu-img convert -n -f raw -O raw "$W/fs.img" "nbd+unix:///fs1?socket=$DS/nbd.sock"
echo bench >"$W/pw"
BLOCKWISE_PASSWORD=bench "$W/blockwise" repo init -r "$W/repo" >/dev/null
BLOCKWISE_DATASTORE=$DS "$W/blockwise" policy create files --disk fs1 --schedule @yearly --repo "$W/repo" --password-file "$W/pw" >/dev/null
for _ in $(seq 600); do BLOCKWISE_DATASTORE=$DS "$W/blockwise" policy show files | grep -q "key held in memory" && break; sleep 0.1; done
PT=$(BLOCKWISE_DATASTORE=$DS "$W/blockwise" policy run files --wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["summary"]["id"])')
echo "after the backup of fs1 by the policy:"; grep -E 'VmRSS|VmHWM' /proc/$PID/status
echo 5 >/proc/$PID/clear_refs # VmHWM starts again from VmRSS: the peak below is the file requests'
F="/v1/policies/files/points/$PT/files"
echo "file browser: point ${PT:0:12} of fs1 (ext4, /many: $FILES files of 1-8 KiB, /big.bin: 8 MiB)"
timed "files: / (the point's disks)" "$F?path=/"
timed "files: /disk/many ($FILES entries)" "$F?path=/disk/many"
timed "files: /disk/big.bin (download)" "$F?path=/disk/big.bin"
timed "files: /disk/many as tar" "$F?path=/disk/many&archive=tar"
echo "after the file requests (VmHWM: their peak):"; grep -E 'VmRSS|VmHWM|RssAnon|RssFile' /proc/$PID/status

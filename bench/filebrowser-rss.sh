#!/usr/bin/env bash
# bench/filebrowser-rss.sh BIN LABEL   (env N=backups, default 4; TEMPLATE)
#
# The host's RSS (VmRSS, VmHWM, RssAnon, RssFile) when it starts, once a
# policy's key is held, after each of N policy backups of a 64 MiB ext4
# disk (4 MiB changed between them), then the file browser's requests on
# the last point, each 50 times, with the host's CPU ms per request (from
# /proc/PID/stat), and RSS again. The datastore is a copy of TEMPLATE
# (default: made once by bench/consolegen, 1000 disks x 100 points, as
# bench/console.sh). BIN is a blockwise binary, so binaries of two
# commits can be run alternately. BLOCKWISE_MEMPROFILE of the host is
# left in /tmp/filebrowser-mem-LABEL.prof.
set -euo pipefail
BIN=$1; L=$2; N=${N:-4}
TEMPLATE=${TEMPLATE:-/var/tmp/bwconsole-template}
if [ ! -d "$TEMPLATE" ]; then
	(cd "$(dirname "$0")/.." && go build -o /tmp/consolegen ./bench/consolegen)
	/tmp/consolegen -datastore "$TEMPLATE" -disks 1000 -points 100
fi
W=$(mktemp -d /var/tmp/bwfb.XXXXXX)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$W"' EXIT
cp -a --sparse=always "$TEMPLATE" "$W/ds"
DS=$W/ds
BLOCKWISE_MEMPROFILE=$W/mem.prof "$BIN" --datastore "$DS" serve 2>"$W/serve.log" &
PID=$!
SOCK="$DS/api.sock"
for _ in $(seq 300); do [ -S "$SOCK" ] && curl -s --unix-socket "$SOCK" -o /dev/null http://x/v1/host && break; sleep 0.1; done
rss() { echo "$L $1: $(grep -E 'VmRSS|VmHWM|RssAnon|RssFile' /proc/$PID/status | awk '{printf "%s %d MB  ", $1, $2/1024}')"; }
cputicks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
timed() {
	curl -s --unix-socket "$SOCK" -o /dev/null "http://x$2"
	c0=$(cputicks)
	for _ in $(seq 50); do curl -s --unix-socket "$SOCK" -o /dev/null "http://x$2"; done
	cpu=$(echo "($(cputicks) - $c0) * 1000 / $(getconf CLK_TCK) / 50" | bc -l)
	printf '%s %-34s cpu_ms %6.1f\n' "$L" "$1" "$cpu"
}
rss "started"
mkdir -p "$W/tree/many"
head -c 8M /dev/urandom >"$W/tree/big.bin"
for i in $(seq 1000); do head -c $((1024 + i * 7 % 7168)) /dev/urandom >"$W/tree/many/f$i.txt"; done
mkfs.ext4 -q -F -d "$W/tree" "$W/fs.img" 64M >/dev/null
BLOCKWISE_DATASTORE=$DS "$BIN" disk create fs1 --size 64M >/dev/null
qemu-img convert -n -f raw -O raw "$W/fs.img" "nbd+unix:///fs1?socket=$DS/nbd.sock"
echo bench >"$W/pw"
BLOCKWISE_PASSWORD=bench "$BIN" repo init -r "$W/repo" >/dev/null
BLOCKWISE_DATASTORE=$DS "$BIN" policy create files --disk fs1 --schedule @yearly --repo "$W/repo" --password-file "$W/pw" >/dev/null
for _ in $(seq 600); do BLOCKWISE_DATASTORE=$DS "$BIN" policy show files | grep -q "key held in memory" && break; sleep 0.1; done
rss "key held"
for i in $(seq "$N"); do
	PT=$(BLOCKWISE_DATASTORE=$DS "$BIN" policy run files --wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["summary"]["id"])')
	qemu-io -f raw -c "write -P $i $((40 + i * 4))M 4M" "nbd+unix:///fs1?socket=$DS/nbd.sock" >/dev/null
	rss "after backup $i"
done
sleep 5; rss "5 s later"
F="/v1/policies/files/points/$PT/files"
timed "files: /" "$F?path=/"
timed "files: /disk/many (1000 entries)" "$F?path=/disk/many"
timed "files: /disk/big.bin" "$F?path=/disk/big.bin"
timed "files: /disk/many as tar" "$F?path=/disk/many&archive=tar"
rss "after the file requests"
kill -TERM $PID; wait $PID || true
cp "$W/mem.prof" /tmp/filebrowser-mem-$L.prof 2>/dev/null || true

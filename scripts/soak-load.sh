#!/usr/bin/env bash
# scripts/soak-load.sh [SECONDS] [CLIENTS]: the host under load for an hour
# (default 3600 s, 64 API clients and 64 whole-disk NBD readers) on four
# 1 GiB disks; fails on any error or an RSS above 512 MiB (issue 23).
# Called by scripts/soak.sh; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3600}; N=${2:-64}
W=$(mktemp -d /var/tmp/bwsoak-load.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
go build -o "$W/blockwise" ./cmd/blockwise
go build -o "$W/hostload" ./bench/hostload
mkdir -p "$W/ds"
"$W/blockwise" serve --datastore "$W/ds" 2>"$W/serve.log" & PID=$!
for _ in $(seq 100); do [ -S "$W/ds/api.sock" ] && break; sleep 0.1; done
for i in 1 2 3 4; do
	"$W/blockwise" --datastore "$W/ds" disk create "d$i" --size 1G >/dev/null
	head -c 512M /dev/urandom >"$W/fill"
	nbdcopy "$W/fill" "nbd+unix:///d$i?socket=$W/ds/nbd.sock"
done
rm -f "$W/fill"
# On failure the host's log is kept: a client cut mid-handshake only sees
# "server disconnected"; the log says why (e.g. "handshake timed out").
if ! "$W/hostload" -datastore "$W/ds" -pid "$PID" -api "$N" -readers "$N" \
	-duration "${SECS}s" -warmup 60s -max-rss 512; then
	cp "$W/serve.log" /var/tmp/bwsoak-load-serve.log
	echo "host log kept in /var/tmp/bwsoak-load-serve.log; its warnings:" >&2
	grep -v 'level=DEBUG' /var/tmp/bwsoak-load-serve.log | tail -20 >&2
	exit 1
fi

#!/usr/bin/env bash
# bench/repo-scale.sh [STEPS]: backup, restore, check, prune and stats on
# a repository of 1 M and then 10 M chunks (issue 23, item 7; STEPS
# defaults to "1000000 10000000"). bench/repogen fills it synthetically
# (4 KiB chunks, unique, highly compressible: the index holds every chunk
# while the repository stays ~100 bytes a chunk). Each step prints wall
# seconds and peak RSS of each command; the goals: each grows at most
# linearly with the chunks, and backup and restore stay <= 256 MiB RSS.
# ~8 minutes for 10 M here. BENCH_DIR picks the scratch directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${1:-"1000000 10000000"}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwrscale.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/repogen" ./bench/repogen)
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench BLOCKWISE_CACHE_DIR=$W/cache
mkdir -p "$W/ds"
"$BW" serve 2>"$W/serve.log" & PID=$!
for _ in $(seq 100); do [ -S "$W/ds/api.sock" ] && break; sleep 0.1; done
"$BW" disk create vm --size 64M >/dev/null
head -c 64M /dev/urandom >"$W/vm.raw"
nbdcopy "$W/vm.raw" "nbd+unix:///vm?socket=$W/ds/nbd.sock"
timed() { # label cmd...: "label  seconds  peak-RSS-MiB"
	local label=$1; shift
	/usr/bin/time -f "%e %M" -o "$W/t" "$@" >"$W/out" 2>&1 || { echo "FAILED: $*" >&2; cat "$W/out" >&2; exit 1; }
	read -r s kib <"$W/t"
	printf '  %-28s %8.2f s %8d MiB\n' "$label" "$s" $((kib >> 10))
}
have=0
for n in $STEPS; do
	if [ "$have" = 0 ]; then
		"$W/repogen" -repo "$W/repo" -password bench -chunks "$n" -disks 4
	else
		"$W/repogen" -repo "$W/repo" -password bench -chunks $((n - have)) -disks 4 -grow
	fi
	have=$n
	echo "== $n chunks ($(du -sh "$W/repo" | cut -f1) on disk)"
	"$BW" repo key add --new-key-file "$W/key" >/dev/null 2>&1 || true
	export BLOCKWISE_KEY_FILE=$W/key # no Argon2id in the timings
	timed "backup (64 MiB disk)" "$BW" backup vm
	timed "restore (64 MiB)" "$BW" restore latest --disk vm --to "$W/r.raw"
	cmp "$W/r.raw" "$W/vm.raw"; rm -f "$W/r.raw"
	timed "check" "$BW" check
	timed "stats" "$BW" stats
	timed "prune (nothing to remove)" "$BW" prune
	unset BLOCKWISE_KEY_FILE
done

#!/usr/bin/env bash
# bench/repo-scale.sh [STEPS]: backup, restore, check, stats and prune on
# a repository of 1 M and then 10 M chunks (issue 23, item 7; STEPS
# defaults to "1000000 10000000"). bench/repogen fills it synthetically
# (4 KiB chunks, unique, highly compressible: the index holds every chunk
# while the repository stays ~180 bytes a chunk), in 8 restore points of
# sparse disks. Each step prints wall seconds, CPU seconds (user+sys) and
# peak RSS of each command; the end prints each one's growth between the
# first and last steps against the growth in chunks. Goals: each grows at
# most linearly with the chunks, and backup and restore stay <= 256 MiB
# RSS. ~20 minutes for 10 M on a loaded 2-core machine (6 of them
# generating). BENCH_DIR picks the scratch directory (~2 GB at 10 M).
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
OPS="backup restore check stats prune"
declare -A WALL CPU RSS
timed() { # step op cmd...: prints "op  wall  cpu  rss", records them
	local step=$1 op=$2; shift 2
	/usr/bin/time -f "%e %U %S %M" -o "$W/t" "$@" >"$W/out" 2>&1 || { echo "FAILED: $*" >&2; cat "$W/out" >&2; exit 1; }
	read -r e u s kib <"$W/t"
	WALL[$step.$op]=$e CPU[$step.$op]=$(python3 -c "print(round($u+$s, 2))") RSS[$step.$op]=$((kib >> 10))
	printf '  %-8s %9.2f s wall %9.2f s cpu %6d MiB\n' "$op" "$e" "${CPU[$step.$op]}" "${RSS[$step.$op]}"
}
have=0 first= last=
for n in $STEPS; do
	grow=; [ "$have" = 0 ] || grow=-grow
	"$W/repogen" -repo "$W/repo" -password bench -chunks $((n - have)) -disks 8 $grow
	have=$n; first=${first:-$n}; last=$n
	echo "== $n chunks ($(du -sh "$W/repo" | cut -f1) on disk, $(ls "$W/repo/index" | wc -l) index files)"
	"$BW" repo key add --new-key-file "$W/key" >/dev/null 2>&1 || true
	export BLOCKWISE_KEY_FILE=$W/key # no Argon2id in the timings
	timed "$n" backup "$BW" backup vm
	timed "$n" restore "$BW" restore latest --disk vm --to "$W/r.raw"
	cmp "$W/r.raw" "$W/vm.raw"; rm -f "$W/r.raw"
	timed "$n" check "$BW" check
	timed "$n" stats "$BW" stats
	timed "$n" prune "$BW" prune
	unset BLOCKWISE_KEY_FILE
done
[ "$first" = "$last" ] && exit 0
echo "== growth from $first to $last chunks ($(python3 -c "print(round($last/$first, 1))")×; goal: at most that; RSS goal for backup and restore <= 256 MiB)"
for op in $OPS; do
	printf '  %-8s wall %6.2f×  cpu %6.2f×  rss %5.2f× (%d MiB)\n' "$op" \
		"$(python3 -c "print(${WALL[$last.$op]}/max(${WALL[$first.$op]},0.01))")" \
		"$(python3 -c "print(${CPU[$last.$op]}/max(${CPU[$first.$op]},0.01))")" \
		"$(python3 -c "print(${RSS[$last.$op]}/${RSS[$first.$op]})")" "${RSS[$last.$op]}"
done

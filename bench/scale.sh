#!/usr/bin/env bash
# bench/scale.sh: costs grow with change, not with size (issue 23, item 7).
#
#  1. Thin disks cost what they hold: full backup of a 2 TiB thin disk and
#     of a 1 GiB disk holding the same 256 MiB.
#  2. A 2 TiB thin disk with 4 GiB allocated, then 1 GiB changed: the
#     incremental against the full backup of a 1 GiB disk (goal ≤ 1.2×),
#     and the host's changed-areas query for it (goal ≤ 100 ms, ≤ 64 MiB
#     of host memory).
# Times are backup.Run's (--json "seconds"; key files, so no Argon2id);
# BENCH_DIR picks the scratch directory (default /var/tmp); INC_WORKERS
# the incremental's concurrent reads (backup --workers, default 4);
# SKIP_THIN=1 skips part 1; BEFORE=/path/to/an/older/blockwise also runs
# the incremental with that binary (same changes) over its own full
# backup of the disk in its own repository (a parent in its own format),
# then the new one: side by side; PAIRS=N runs N such pairs, alternating
# (each on a copy of its repository but the last).
# PROFILE=DIR writes the incrementals' CPU profiles and execution traces
# there (BLOCKWISE_CPUPROFILE, BLOCKWISE_MEMPROFILE, BLOCKWISE_TRACE).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwscale.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen)
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_PASSWORD=bench
mkdir -p "$W/ds"
"$BW" serve 2>"$W/serve.log" & PID=$!
for _ in $(seq 100); do [ -S "$W/ds/api.sock" ] && break; sleep 0.1; done
sock=$W/ds/nbd.sock
newrepo() { # name: a fresh repository with a key file, exported
	export BLOCKWISE_REPO=$W/repo-$1 BLOCKWISE_KEY_FILE=
	"$BW" repo init >/dev/null
	"$BW" repo key add --new-key-file "$W/key-$1" >/dev/null
	export BLOCKWISE_KEY_FILE=$W/key-$1
}
# secs ARGS: backup.Run's seconds, mode, bytes read, the changes query's
# ms, and the command's CPU seconds (user+sys: what a shared machine's
# load does not stretch), peak RSS in MiB.
secs() {
	/usr/bin/time -f "%U %S %M" -o "$W/time" "$BW" backup "$@" --json >"$W/json"
	read -r u s kib <"$W/time"
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["seconds"], j["mode"], j["readBytes"], round(j["phases"].get("changes", 0)*1000, 1), round(float(sys.argv[2])+float(sys.argv[3]), 2), int(sys.argv[4])>>10)' "$W/json" "$u" "$s" "$kib"
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

if [ -z "${SKIP_THIN:-}" ]; then
echo "== 1. thin: 256 MiB on a 1 GiB and on a 2 TiB disk"
head -c 256M /dev/urandom >"$W/d256"
for d in small:1G big:2T; do
	"$BW" disk create "${d%%:*}" --size "${d##*:}" >/dev/null
	nbdcopy "$W/d256" "nbd+unix:///${d%%:*}?socket=$sock"
done
rm -f "$W/d256"
newrepo t1; read -r s1 _ <<<"$(secs small)"
newrepo t2; read -r s2 _ <<<"$(secs big)"
echo "full backup: 1 GiB disk ${s1}s, 2 TiB disk ${s2}s, ratio $(python3 -c "print(round($s2/$s1, 2))") (goal <= 1.2)"
fi

echo "== 2. 2 TiB disk, 4 GiB allocated, then 1 GiB changed; 1 GiB disk full of data"
"$BW" disk create huge --size 2T >/dev/null
truncate -s 2T "$W/huge.raw"
"$W/imagegen" mutate -file "$W/huge.raw" -uri "nbd+unix:///huge?socket=$sock" -frac $(python3 -c 'print(4/2048)') -seed 1 >/dev/null
"$BW" disk create full1g --size 1G >/dev/null
head -c 1G /dev/urandom >"$W/d1g"; nbdcopy "$W/d1g" "nbd+unix:///full1g?socket=$sock"; rm -f "$W/d1g"
newrepo s
read -r f1 _ _ _ c1 r1 <<<"$(secs full1g)"
read -r fh _ _ _ ch rh <<<"$(secs huge)"
if [ -n "${BEFORE:-}" ]; then # the older binary's parent, in its own format
	newrepo o
	read -r fo _ _ _ co ro <<<"$(BW=$BEFORE secs huge)"
	echo "full of the 2 TiB disk (4 GiB) with $BEFORE: ${fo}s (${co}s CPU, $ro MiB)"
	export BLOCKWISE_REPO=$W/repo-s BLOCKWISE_KEY_FILE=$W/key-s
fi
"$W/imagegen" mutate -file "$W/huge.raw" -uri "nbd+unix:///huge?socket=$sock" -frac $(python3 -c 'print(1/2048)') -seed 2 >/dev/null
rm -f "$W/huge.raw"
incr() { # label: the incremental, profiled under PROFILE
	if [ -n "${PROFILE:-}" ]; then
		BLOCKWISE_CPUPROFILE=$PROFILE/inc-$1.prof BLOCKWISE_MEMPROFILE=$PROFILE/inc-$1.mem BLOCKWISE_TRACE=$PROFILE/inc-$1.trace secs huge --workers "${INC_WORKERS:-4}"
	else
		secs huge --workers "${INC_WORKERS:-4}"
	fi
}
pairs=${PAIRS:-1}
for p in $(seq "$pairs"); do
	[ -n "${BEFORE:-}" ] || break
	cp -a "$W/repo-o" "$W/repo-b"
	read -r binc _ _ _ bc br <<<"$(BW=$BEFORE BLOCKWISE_REPO=$W/repo-b BLOCKWISE_KEY_FILE=$W/key-o incr before$p)"
	rm -rf "$W/repo-b"
	echo "pair $p: incremental with $BEFORE: ${binc}s, ${bc}s CPU, ${br} MiB ($(python3 -c "print(round($binc/$f1, 2), round($bc/$c1, 2))")× the full of 1 GiB in time and CPU)"
	[ "$p" -lt "$pairs" ] || break
	cp -a "$W/repo-s" "$W/repo-a"
	read -r ainc _ _ _ ac ar <<<"$(BLOCKWISE_REPO=$W/repo-a incr after$p)"
	rm -rf "$W/repo-a"
	echo "pair $p: incremental with this tree: ${ainc}s, ${ac}s CPU, ${ar} MiB ($(python3 -c "print(round($ainc/$f1, 2), round($ac/$c1, 2))")× the full of 1 GiB in time and CPU)"
done
before=$(rss)
read -r inc mode read changes_ms ci ri <<<"$(incr after)"
after=$(rss)
echo "full of the 1 GiB disk ${f1}s (${c1}s CPU, $r1 MiB); full of the 2 TiB disk (4 GiB) ${fh}s (${ch}s CPU, $rh MiB); incremental after 1 GiB changed ${inc}s (${ci}s CPU, $ri MiB; $mode, read $((read >> 20)) MiB)"
echo "incremental / full of 1 GiB: $(python3 -c "print(round($inc/$f1, 2))") in time, $(python3 -c "print(round($ci/$c1, 2))") in CPU (goal <= 1.2); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "changes query ${changes_ms} ms (goal <= 100); host RSS $((before >> 10)) -> $((after >> 10)) MiB (goal: the query <= 64 MiB)"

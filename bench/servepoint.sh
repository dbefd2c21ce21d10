#!/usr/bin/env bash
# bench/servepoint.sh [SIZE]   (default 1G)          instant recovery
#
# Reading a restore point served by `blockwise serve-point` (chunks loaded
# from the encrypted, compressed repository and verified per request)
# against qemu-nbd serving the restored image as a raw file from the page
# cache: 4 KiB random reads (fio's nbd engine, depth 1: mean latency,
# warm = after one full read through the export, cold = a fresh process),
# small sequential reads as a booting VM does (qemu-img bench, 4 KiB,
# depth 1 and 16), and a whole copy with nbdcopy; then `recover` (copy
# into a new disk and switch) against `restore --to-disk`.
# S3=1 runs it all again with the repository on versitygw (127.0.0.1).
# BENCH_DIR picks the scratch directory (default: under /var/tmp).
# REV=<git revision> measures the blockwise of that revision (before/after).
# PROFILE=1 also serves the point with bench/profpoint and writes
# $BENCH_DIR/point.pprof (go tool pprof -top).
set -euo pipefail
SIZE=${1:-1G}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in qemu-img:qemu-utils qemu-nbd:qemu-utils nbdcopy:libnbd-bin fio:fio; do
	command -v "${t%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${t#*:}" >/dev/null
done
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwpoint.XXXXXX")
PIDS=() SPS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/repo BLOCKWISE_PASSWORD=bench
BW=$W/blockwise
(cd "$ROOT" && go build -o "$W/imagegen" ./bench/imagegen && go build -o "$W/profpoint" ./bench/profpoint)
if [ -n "${REV:-}" ]; then # the blockwise of another revision, for before/after
	git -C "$ROOT" worktree add -q --detach "$W/rev" "$REV"
	(cd "$W/rev" && go build -o "$BW" ./cmd/blockwise)
	git -C "$ROOT" worktree remove --force "$W/rev"
else
	(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise)
fi
# Flags a revision before serve-point --cache-mb / recover lacks are left out.
CACHEFLAG=1; "$BW" serve-point --help | grep -q -- --cache-mb || CACHEFLAG=
RECOVER=1; "$BW" recover --help >/dev/null 2>&1 || RECOVER=
"$W/imagegen" gen -size "$SIZE" -out "$W/disk.raw" >/dev/null
BYTES=$(stat -c %s "$W/disk.raw")
CACHE=$((BYTES / 1048576 + 64)) # MiB: the whole image fits (warm)
mkdir -p "$BLOCKWISE_DATASTORE"
"$BW" serve --nbd-tcp "" 2>"$W/serve.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
"$BW" disk create bench --size "$BYTES" >/dev/null
qemu-img convert -n --target-is-zero -f raw -O raw "$W/disk.raw" "nbd+unix:///bench?socket=$BLOCKWISE_DATASTORE/nbd.sock"
qemu-nbd -r -f raw -t -k "$W/qnbd.sock" "$W/disk.raw" & PIDS+=($!)
cat "$W/disk.raw" >/dev/null
QNBD="nbd+unix:///?socket=$W/qnbd.sock"

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; awk "BEGIN {print $(date +%s.%N) - $s}"; }
waitsock() { for _ in $(seq 200); do [ -S "$1" ] && return; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }
# fio4k URI N: mean latency (µs) of N 4 KiB random reads at depth 1.
fio4k() {
	fio --name=r --ioengine=nbd --uri="$1" --rw=randread --bs=4k --iodepth=1 --number_ios="$2" \
		--size="$BYTES" --randseed=7 --output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' '/^3;/ {print $40}' # read latency mean, µs
}
qb() { qemu-img bench -f raw -c 32768 -s 4096 -d "$1" "$2"; }
nc() { nbdcopy "$1" null:; }
row() { printf "%-44s %10.2f %12.2f %8.2fx\n" "$1" "$2" "$3" "$(awk "BEGIN {print $2 / $3}")"; }

# start_point NAME ARGS...: serve-point on $W/NAME.sock; its URI in $URI.
# (Not in a $(...) subshell: PIDS must hear of it, or cleanup misses it.)
start_point() {
	local name=$1; shift
	rm -f "$W/$name.sock"
	if [ -z "$CACHEFLAG" ]; then
		case "${1:-}" in --cache-mb) shift 2 ;; esac
		[ "${1:-}" = --writable ] && return 1
	fi
	"$BW" serve-point latest --socket "$W/$name.sock" "$@" >/dev/null 2>>"$W/point.log" & PIDS+=($!) SPS+=($!)
	waitsock "$W/$name.sock"
	URI="nbd+unix:///?socket=$W/$name.sock"
}

run_suite() { # label
	local label=$1 point cold warm wr q p
	"$BW" repo init >/dev/null
	"$BW" backup bench >/dev/null
	echo "== $label: image $BYTES bytes ($SIZE); $(nproc) cores; $(qemu-nbd --version | head -1)"
	printf "%-44s %10s %12s %9s\n" "" "qemu-nbd" "serve-point" "speed (qemu-nbd time / ours)"
	start_point cold --cache-mb 64; point=$URI
	q=$(fio4k "$QNBD" 4000); p=$(fio4k "$point" 2000)
	row "4 KiB random read, depth 1, cold (µs)" "$q" "$p"
	start_point warm --cache-mb "$CACHE"; point=$URI
	nbdcopy "$point" null: # warms its chunk cache
	q=$(fio4k "$QNBD" 20000); p=$(fio4k "$point" 20000)
	row "4 KiB random read, depth 1, warm (µs)" "$q" "$p"
	rm -rf "$W/ov"
	if start_point wr --cache-mb "$CACHE" --writable --overlay "$W/ov"; then
		wr=$URI
		nbdcopy "$wr" null:
		p=$(fio4k "$wr" 20000)
		row "  same, serve-point --writable (µs)" "$q" "$p"
	else
		wr=$point
	fi
	row "4 KiB seq reads x32768, depth 1 (s)" "$(secs qb 1 "$QNBD")" "$(secs qb 1 "$point")"
	row "4 KiB seq reads x32768, depth 16 (s)" "$(secs qb 16 "$QNBD")" "$(secs qb 16 "$point")"
	start_point copy; point=$URI
	row "nbdcopy of the whole image, cold (s)" "$(secs nc "$QNBD")" "$(secs nc "$point")"
	row "nbdcopy of the whole image, warm (s)" "$(secs nc "$QNBD")" "$(secs nc "$wr")"
	if [ -n "$RECOVER" ]; then recover_row; fi
	kill "${SPS[@]}"; wait "${SPS[@]}" 2>/dev/null || true; SPS=()
}

# recover_row: restore --to-disk against recover (start to switch), no
# guest I/O; throughput ratio restore time / recover time. The restore
# runs with --no-clone: like recover, it reads every chunk from the
# repository instead of starting from a clone of the host's disk.
recover_row() {
	local r s e
	r=$(secs "$BW" restore latest --to-disk "restored$RANDOM" --no-clone)
	rm -rf "$W/rov" "$W/rec.out"
	s=$(date +%s.%N)
	"$BW" recover latest --to-disk "recovered$RANDOM" --overlay "$W/rov" --socket "$W/rec.sock" >"$W/rec.out" 2>>"$W/point.log" & PIDS+=($!)
	until grep -q "switched to disk" "$W/rec.out" 2>/dev/null; do sleep 0.05; done
	e=$(awk "BEGIN {print $(date +%s.%N) - $s}")
	kill "${PIDS[-1]}"; wait "${PIDS[-1]}" || true
	printf "%-44s %10.2f %12.2f %8.2fx\n" "restore --to-disk vs recover to switch (s)" "$r" "$e" "$(awk "BEGIN {print $r / $e}")"
}

run_suite "local repository"
if [ "${PROFILE:-}" = 1 ]; then
	"$W/profpoint" -repo "$BLOCKWISE_REPO" -socket "$W/prof.sock" -cache-mb "$CACHE" -cpuprofile "${BENCH_DIR:-/var/tmp}/point.pprof" & PP=$!
	waitsock "$W/prof.sock"
	PURI="nbd+unix:///?socket=$W/prof.sock"
	nbdcopy "$PURI" null:; nbdcopy "$PURI" null:; fio4k "$PURI" 20000 >/dev/null
	kill "$PP"; wait "$PP" || true
	echo "profile: ${BENCH_DIR:-/var/tmp}/point.pprof"
fi
if [ "${S3:-}" = 1 ]; then
	"$ROOT/scripts/versitygw.sh" >/dev/null
	mkdir -p "$W/s3/backups"
	PORT=$((20000 + RANDOM % 20000))
	AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret \
		"$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")" --access bench --secret benchsecret \
		--port "127.0.0.1:$PORT" --quiet --keep-alive posix "$W/s3" & PIDS+=($!)
	sleep 1
	export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret BLOCKWISE_REPO="s3:http://127.0.0.1:$PORT/backups/bench"
	run_suite "S3 repository (versitygw)"
fi

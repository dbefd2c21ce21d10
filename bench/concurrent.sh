#!/usr/bin/env bash
# bench/concurrent.sh [DISKS] [MIB]: many disks backed up at once by one
# host into one repository (issue 23, item 7): DISKS disks (default 50) of
# MIB MiB (default 64, half written with a mix of random and text-like
# data), backed up one at a time (--parallel 1) and all at once
# (--parallel 8), into a local repository and into versitygw on 127.0.0.1
# (S3); prints aggregate MB/s and the ratio (goal >= 1.8x on 2 cores), then
# check --read-data of each repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-50}; MIB=${2:-64}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bwconc.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT INT TERM
"$ROOT/scripts/versitygw.sh"
BW=$W/blockwise
(cd "$ROOT" && go build -o "$BW" ./cmd/blockwise && go build -o "$W/imagegen" ./bench/imagegen)
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_PASSWORD=bench BLOCKWISE_CACHE_DIR=$W/cache
mkdir -p "$W/ds" "$W/s3"
"$BW" serve 2>"$W/serve.log" & PIDS+=($!)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret
"$(go env GOPATH)/bin/versitygw" --access bench --secret benchsecret --port "127.0.0.1:$port" posix "$W/s3" >"$W/s3.log" 2>&1 & PIDS+=($!)
mkdir -p "$W/s3/bench"
for _ in $(seq 100); do [ -S "$W/ds/api.sock" ] && break; sleep 0.1; done
disks=()
for i in $(seq "$N"); do
	"$BW" disk create "c$i" --size "${MIB}M" >/dev/null
	"$W/imagegen" gen -size "$((MIB / 2))M" -seed "$i" -out "$W/img" >/dev/null
	nbdcopy "$W/img" "nbd+unix:///c$i?socket=$W/ds/nbd.sock"
	disks+=("c$i")
done
rm -f "$W/img"
data=$(( N * MIB / 2 ))
run() { # repo parallel: seconds for a full backup of every disk
	export BLOCKWISE_REPO=$1 BLOCKWISE_KEY_FILE=
	"$BW" repo init >/dev/null
	"$BW" repo key add --new-key-file "$W/key" >/dev/null
	export BLOCKWISE_KEY_FILE=$W/key
	local a b; a=$(date +%s.%N)
	"$BW" backup --parallel "$2" "${disks[@]}" >/dev/null
	b=$(date +%s.%N)
	"$BW" check --read-data >/dev/null || { echo "check --read-data FAILED for $1" >&2; exit 1; }
	rm -f "$W/key"
	python3 -c "print($b-$a)"
}
for where in local s3; do
	for p in 1 8; do
		repo=$W/repo-$p; [ $where = s3 ] && repo="s3:http://127.0.0.1:$port/bench/r$p"
		s=$(run "$repo" "$p")
		printf '%-6s --parallel %d: %6.2f s, %7.1f MB/s aggregate\n' "$where" "$p" "$s" "$(python3 -c "print($data*1.048576/$s)")"
		eval "t_${where}_$p=$s"
	done
	python3 -c "print('$where: parallel 8 vs one at a time: %.2fx (goal >= 1.8x)' % (float('${t_local_1:-1}' if '$where'=='local' else '${t_s3_1:-1}') / float('${t_local_8:-1}' if '$where'=='local' else '${t_s3_8:-1}')))"
done

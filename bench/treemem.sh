#!/usr/bin/env bash
# bench/treemem.sh [SIZE]   (default 1T; e.g. 256G)
#
# Peak RSS of a full backup of a large disk written sparsely everywhere:
# one 64 KiB block in every 256 MiB (every leaf group of the point's hash
# tree, docs/repository.md T9). Before T9 a backup held every group it
# set until Commit: 128 KiB a group, 512 MiB for 1 TiB; now the groups
# the copy passed are stored as it goes. BW_BEFORE=PATH also runs an
# older blockwise binary on the same disk and repository (a fresh full
# backup each) and prints the ratio. BENCH_DIR picks the scratch
# directory (default: under /var/tmp).
set -euo pipefail
SIZE=${1:-1T}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
need qemu-io qemu-utils
[ -x /usr/bin/time ] || need /usr/bin/time time
workdir bwtreemem
export BLOCKWISE_DATASTORE=$W/ds BLOCKWISE_REPO=$W/bw-repo BLOCKWISE_PASSWORD=bench
build_tools

mkdir -p "$BLOCKWISE_DATASTORE"
"$BW" serve --nbd-tcp "" 2>"$W/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do [ -S "$BLOCKWISE_DATASTORE/api.sock" ] && break; sleep 0.1; done
"$BW" disk create bench --size "$SIZE" >/dev/null
BYTES=$(numfmt --from=iec "$SIZE")
SPAN=$((256 << 20))
args=()
for ((off = 0; off < BYTES; off += SPAN)); do
	args+=(-c "write -q -P $(((off / SPAN) % 250 + 1)) $((off + (off / SPAN % 4096) * 65536)) 64k")
done
qemu-io -f raw "${args[@]}" "nbd+unix:///bench?socket=$BLOCKWISE_DATASTORE/nbd.sock"
"$BW" repo init >/dev/null

# rss NAME BINARY: a full backup's peak RSS (KiB) and wall seconds
rss() {
	/usr/bin/time -v -o "$W/$1.tv" "$2" backup bench --full --json >"$W/$1.json" 2>"$W/$1.err" || {
		cat "$W/$1.err" >&2; exit 1; }
	awk -F': ' '/Maximum resident set size/ {r=$2} /Elapsed \(wall clock\)/ {e=$2} END {print r, e}' "$W/$1.tv"
}
echo "disk $SIZE ($BYTES bytes), $((BYTES / SPAN)) groups written"
read -r now_rss now_s < <(rss now "$BW")
echo "full backup, this tree:  peak RSS $((now_rss / 1024)) MiB, $now_s"
if [ -n "${BW_BEFORE:-}" ]; then
	read -r old_rss old_s < <(rss before "$BW_BEFORE")
	echo "full backup, BW_BEFORE:  peak RSS $((old_rss / 1024)) MiB, $old_s"
	awk -v a="$old_rss" -v b="$now_rss" 'BEGIN {printf "ratio before/now: %.2f\n", a / b}'
fi

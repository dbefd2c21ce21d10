#!/usr/bin/env bash
# bench/vaai.sh: the VAAI offloads against moving the data (issue 17).
#
# On XFS with reflink and on ext4 (loop file systems; needs root), a disk
# of SIZE holding DATA bytes of random data:
#   - full clone (`disk clone SRC@SNAP DST`: reflink on XFS,
#     copy_file_range on ext4) vs `qemu-img convert` of the same snapshot
#     over NBD into a new disk on the same host;
#   - linked clone (`POST /v1/disks/SRC/clone` with linked, timed by curl
#     on the API socket: no process start in it);
#   - eager-zeroed create of ZSIZE (`disk create --provision
#     eager-zeroed`) vs writing ZSIZE of zeroes with nbdcopy into a thin
#     disk (-S 0 --no-extents: literal zero bytes over NBD);
#   - reclaim of RECLAIM bytes of zero-filled data at --rate RATE MB/s:
#     the measured rate against RATE.
# Env: SIZE (default 4G), DATA (2G), ZSIZE (10G), RECLAIM (256M), RATE
# (64, MB/s), FS ("xfs ext4"); KEEP=1 keeps the work directory. The
# results are appended to bench/results/vaai.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-4G}
DATA=${DATA:-2G}
ZSIZE=${ZSIZE:-10G}
RECLAIM=${RECLAIM:-256M}
RATE=${RATE:-64}
FS=${FS:-"xfs ext4"}
for c in qemu-img nbdcopy curl jq bc mkfs.xfs mkfs.ext4 numfmt; do
	command -v $c >/dev/null || { echo "vaai.sh: $c not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "vaai.sh: needs root (loop mounts)" >&2; exit 1; }
bytes() { numfmt --from=iec "$1"; }
SIZEB=$(bytes "$SIZE"); DATAB=$(bytes "$DATA"); ZSIZEB=$(bytes "$ZSIZE"); RECLAIMB=$(bytes "$RECLAIM")

W=$(mktemp -d /tmp/bw-vaaibench.XXXXXX)
PIDS=()
MNTS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for m in "${MNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
	[ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$W/blockwise" ./cmd/blockwise
head -c "$DATAB" /dev/urandom >"$W/data.raw"
truncate -s "$ZSIZEB" "$W/zero.raw"
truncate -s "$RECLAIMB" "$W/reclaim.raw"
secs() { date +%s.%N; }
ratio() { echo "scale=1; $1 / $2" | bc; }
OUT="$W/out.txt"
: >"$OUT"

bench_fs() { # FSTYPE MKFS-ARGS...
	local fs=$1; shift
	local img="$W/$fs.img" mnt="$W/$fs"
	truncate -s $((3 * SIZEB + ZSIZEB + 2 * RECLAIMB + (1 << 30))) "$img"
	mkfs."$fs" -q "$@" "$img" >/dev/null
	mkdir -p "$mnt"
	mount -o loop "$img" "$mnt"
	MNTS+=("$mnt")
	local bw=("$W/blockwise" --datastore "$mnt")
	"${bw[@]}" serve 2>"$W/$fs.log" &
	PIDS+=($!)
	for _ in $(seq 100); do [ -S "$mnt/api.sock" ] && break; sleep 0.1; done
	local sock="$mnt/nbd.sock"
	"${bw[@]}" disk create src --size "$SIZEB" >/dev/null
	nbdcopy --flush "$W/data.raw" "nbd+unix:///src?socket=$sock"
	"${bw[@]}" snapshot create src s1 >/dev/null
	sync

	local t0 t1 full conv stats
	t0=$(secs)
	stats=$("${bw[@]}" disk clone src@s1 full --json | jq -c .stats)
	t1=$(secs); full=$(echo "$t1 - $t0" | bc)
	"${bw[@]}" disk create conv --size "$SIZEB" >/dev/null
	t0=$(secs)
	qemu-img convert -n -f raw -O raw "nbd+unix:///src@s1?socket=$sock" "nbd+unix:///conv?socket=$sock"
	t1=$(secs); conv=$(echo "$t1 - $t0" | bc)
	qemu-img compare -f raw -F raw "nbd+unix:///full?socket=$sock" "nbd+unix:///src@s1?socket=$sock" >/dev/null

	local linked
	linked=$(curl -s -o /dev/null -w '%{time_total}' --unix-socket "$mnt/api.sock" -X POST \
		-H 'Content-Type: application/json' -d '{"name":"lnk","snapshot":"s1","linked":true}' http://host/v1/disks/src/clone)

	local eager nbz
	t0=$(secs)
	"${bw[@]}" disk create eager --size "$ZSIZEB" --provision eager-zeroed >/dev/null
	t1=$(secs); eager=$(echo "$t1 - $t0" | bc)
	"${bw[@]}" disk create zeroes --size "$ZSIZEB" >/dev/null
	t0=$(secs)
	nbdcopy -S 0 --no-extents --flush "$W/zero.raw" "nbd+unix:///zeroes?socket=$sock"
	t1=$(secs); nbz=$(echo "$t1 - $t0" | bc)

	local rec rrate
	"${bw[@]}" disk create rec --size "$RECLAIMB" >/dev/null
	nbdcopy -S 0 --no-extents --flush "$W/reclaim.raw" "nbd+unix:///rec?socket=$sock"
	local before after task
	before=$("${bw[@]}" disk show rec --json | jq .allocated)
	task=$("${bw[@]}" disk reclaim rec --rate "$RATE" --wait --json)
	# The task's own start and end, as the host recorded them.
	rec=$(python3 -c 'import json,sys,datetime as d; t=json.load(sys.stdin); p=lambda s: d.datetime.fromisoformat(s.replace("Z","+00:00")); print((p(t["finished"])-p(t["created"])).total_seconds())' <<<"$task")
	after=$("${bw[@]}" disk show rec --json | jq .allocated)
	rrate=$(echo "scale=1; $before / 1048576 / $rec" | bc)

	{
		echo "[$fs] full clone $DATA of $SIZE: ${full}s ($stats) vs qemu-img convert over NBD ${conv}s: $(ratio "$conv" "$full")x"
		echo "[$fs] linked clone: ${linked}s (API round trip)"
		echo "[$fs] eager-zeroed create $ZSIZE: ${eager}s vs nbdcopy of zeroes ${nbz}s: $(ratio "$nbz" "$eager")x"
		echo "[$fs] reclaim of $((before >> 20)) MiB at --rate $RATE: ${rec}s = ${rrate} MB/s ($(ratio "$rrate*100" "$RATE")% of the rate), allocated $before -> $after"
	} | tee -a "$OUT"
}

for fs in $FS; do
	case $fs in
	xfs) bench_fs xfs -m reflink=1 ;;
	ext4) bench_fs ext4 -F ;;
	*) echo "vaai.sh: unknown FS $fs" >&2; exit 2 ;;
	esac
done
{
	echo "## $(date -u +%Y-%m-%dT%H:%MZ) SIZE=$SIZE DATA=$DATA ZSIZE=$ZSIZE RECLAIM=$RECLAIM RATE=$RATE ($(nproc) cores, $(uname -r))"
	cat "$OUT"
} >>bench/results/vaai.txt

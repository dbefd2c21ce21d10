#!/usr/bin/env bash
# bench/nbd.sh: blockwise serve vs qemu-nbd (-t -e 8) vs nbdkit's file
# plugin, serving the same 2 GiB raw image, in one run (issue 3).
#
#   nbdcopy read (to null:) and write (from a file, --flush) over a unix
#   socket and TCP 127.0.0.1, on random data and on mixed data/zero/hole
#   content; then 4 KiB random read and write with fio's nbd engine,
#   NJOBS connections × IODEPTH each.
#
# Every test runs REPS times per server, the servers interleaved; the
# table shows medians and the ratios blockwise/qemu-nbd, blockwise/nbdkit.
# Env: SIZE (bytes, default 2 GiB), REPS (3), FIO_SECS (8), NJOBS (4),
# IODEPTH (16), PROFILE=1 serves blockwise with bench/profserve and prints
# `go tool pprof -top` of the run; KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-$((2 << 30))}
REPS=${REPS:-3}
FIO_SECS=${FIO_SECS:-8}
NJOBS=${NJOBS:-4}
IODEPTH=${IODEPTH:-16}
T=${T:-120} # per-command time bound, seconds

# The peers and measuring tools are installed on first use, as
# bench/backup.sh does (Debian package names after the colon).
for c in qemu-nbd:qemu-utils nbdkit:nbdkit nbdcopy:libnbd-bin nbdinfo:libnbd-bin \
	fio:fio jq:jq bc:bc python3:python3; do
	command -v "${c%%:*}" >/dev/null && continue
	echo "nbd.sh: installing ${c##*:}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${c##*:}" >/dev/null
done
command -v go >/dev/null || { echo "nbd.sh: go not installed" >&2; exit 1; }

W=$(mktemp -d /tmp/bw-nbdbench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W/bin"
go build -o "$W/bin/blockwise" ./cmd/blockwise
go build -o "$W/bin/mkdisk" ./bench/mkdisk
[ "${PROFILE:-0}" = 1 ] && go build -o "$W/bin/profserve" ./bench/profserve

port() { # a free TCP port on 127.0.0.1
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
waitsrv() { # wait until a server answers on URI
	for _ in $(seq 100); do
		timeout 5 nbdinfo --size "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "nbd.sh: server at $1 did not start" >&2; return 1
}
secs() { date +%s.%N; }
# warm FILE...: every server's file in the same page-cache state: written
# back, dropped, read again. Cat alone kept whatever the file's history
# left (mkdisk -import's 1 MiB writes vs cp's), and the kernel's cost of a
# 4 KiB write into a cached page depends on the size of the folio holding
# it (ext4 large folios: 7 us vs 23 us per pwrite measured here), which
# made fio randwrite compare file histories, not servers (issue 23).
warm() {
	local f
	for f in "$@"; do
		python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$f"
		cat "$f" >/dev/null
	done
}

RES="$W/results.txt" # server test content rep MB/s
: >"$RES"

# start_servers CONTENT: three servers on copies of $W/CONTENT.img.
start_servers() {
	local c=$1
	cp --sparse=always "$W/$c.img" "$W/q-$c.raw"
	cp --sparse=always "$W/$c.img" "$W/k-$c.raw"
	rm -rf "$W/ds-$c"
	"$W/bin/mkdisk" -datastore "$W/ds-$c" -name d -import "$W/$c.img"
	QP=$(port); KP=$(port); BP=$(port)
	# qemu-nbd and nbdkit listen on one address each: a unix and a TCP
	# instance on the same file (only one is used at a time).
	qemu-nbd -t -e 8 -f raw -k "$W/q.sock" "$W/q-$c.raw" & PIDS+=($!); QU=$!
	qemu-nbd -t -e 8 --image-opts -b 127.0.0.1 -p "$QP" \
		"driver=raw,file.driver=file,file.filename=$W/q-$c.raw,file.locking=off" & PIDS+=($!); QT=$!
	nbdkit -f -U "$W/k.sock" file "file=$W/k-$c.raw" & PIDS+=($!); KU=$!
	nbdkit -f -i 127.0.0.1 -p "$KP" file "file=$W/k-$c.raw" & PIDS+=($!); KT=$!
	if [ "${PROFILE:-0}" = 1 ]; then
		"$W/bin/profserve" -datastore "$W/ds-$c" -nbd-unix "$W/b.sock" -nbd-tcp "127.0.0.1:$BP" -cpuprofile "$W/cpu-$c.pprof" & PIDS+=($!)
	else
		"$W/bin/blockwise" serve --datastore "$W/ds-$c" --nbd-unix "$W/b.sock" --nbd-tcp "127.0.0.1:$BP" --nbd-tcp-insecure-no-auth 2>"$W/serve-$c.log" & PIDS+=($!)
	fi
	BW=$!
	for s in $SERVERS; do for tr in unix tcp; do waitsrv "$(uri $s $tr)"; done; done
}

stop_servers() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
	rm -f "$W"/*.sock
}

uri() { # server transport
	case $1/$2 in
	qemu-nbd/unix) echo "nbd+unix:///?socket=$W/q.sock" ;;
	qemu-nbd/tcp) echo "nbd://127.0.0.1:$QP/" ;;
	nbdkit/unix) echo "nbd+unix:///?socket=$W/k.sock" ;;
	nbdkit/tcp) echo "nbd://127.0.0.1:$KP/" ;;
	blockwise/unix) echo "nbd+unix:///d?socket=$W/b.sock" ;;
	blockwise/tcp) echo "nbd://127.0.0.1:$BP/d" ;;
	esac
}
spid() { # server transport: the process serving it
	case $1/$2 in
	qemu-nbd/unix) echo "$QU" ;; qemu-nbd/tcp) echo "$QT" ;;
	nbdkit/unix) echo "$KU" ;; nbdkit/tcp) echo "$KT" ;;
	blockwise/*) echo "$BW" ;;
	esac
}
# cpu PID: the CPU time (user + system, clock ticks) the process used so
# far. Server CPU per byte or per request is the measure that survives a
# loaded machine, where wall time does not.
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

backing() { # the file a server reads
	case $1 in
	qemu-nbd) echo "$W/q-$2.raw" ;;
	nbdkit) echo "$W/k-$2.raw" ;;
	blockwise) echo "$W/ds-$2/d/flat.raw" ;;
	esac
}

SERVERS="blockwise qemu-nbd nbdkit"
run_copy() { # content
	local c=$1 t s r a b c0 c1
	for tr in unix tcp; do
		for op in read write; do
			for r in $(seq "$REPS"); do
				for s in $SERVERS; do
					if [ $op = read ]; then
						warm "$(backing $s $c)"
						c0=$(cpu "$(spid $s $tr)")
						a=$(secs)
						timeout "$T" nbdcopy "$(uri $s $tr)" null:
					else
						warm "$W/$c.img"
						c0=$(cpu "$(spid $s $tr)")
						a=$(secs)
						timeout "$T" nbdcopy --flush "$W/$c.img" "$(uri $s $tr)"
					fi
					b=$(secs)
					c1=$(cpu "$(spid $s $tr)")
					# server CPU: ms per GiB of image
					echo "$s nbdcopy-$op-$tr $c $r $(echo "$SIZE / ($b - $a) / 1000000" | bc -l) $(echo "($c1 - $c0) * 1000 / $TICK / ($SIZE / 2^30)" | bc -l)" >>"$RES"
				done
			done
		done
	done
}

run_fio() { # 4 KiB random read / write, NJOBS connections, unix socket
	local s r rw c0 c1
	for rw in randread randwrite; do
		for r in $(seq "$REPS"); do
			for s in $SERVERS; do
				warm "$(backing $s random)"
				c0=$(cpu "$(spid $s unix)")
				timeout $((FIO_SECS + 30)) fio --name=nbd --ioengine=nbd --uri="$(uri $s unix)" \
					--rw=$rw --bs=4k --iodepth="$IODEPTH" --numjobs="$NJOBS" --size="$SIZE" \
					--time_based --runtime="$FIO_SECS" --group_reporting --output-format=json \
					--output="$W/fio.json" >/dev/null
				c1=$(cpu "$(spid $s unix)")
				local bw ios
				bw=$(jq '[.jobs[] | .read.bw_bytes + .write.bw_bytes] | add / 1000000' "$W/fio.json")
				ios=$(jq '[.jobs[] | .read.total_ios + .write.total_ios] | add' "$W/fio.json")
				# server CPU: us per request
				echo "$s fio-4k-$rw-${NJOBS}conn random $r $bw $(echo "($c1 - $c0) * 1000000 / $TICK / $ios" | bc -l)" >>"$RES"
			done
		done
	done
}

echo "nbd.sh: generating $((SIZE >> 20)) MiB images in $W" >&2
"$W/bin/mkdisk" -gen random -size "$SIZE" -out "$W/random.img"
"$W/bin/mkdisk" -gen mixed -size "$SIZE" -out "$W/mixed.img"
START=$(secs)
for c in random mixed; do
	echo "nbd.sh: $c content" >&2
	start_servers $c
	run_copy $c
	[ $c = random ] && run_fio
	stop_servers
	rm -f "$W/q-$c.raw" "$W/k-$c.raw"
done

echo
echo "NBD benchmark: $((SIZE >> 20)) MiB raw image, MB/s (median of $REPS; nbdcopy writes use --flush; fio: $NJOBS connections x iodepth $IODEPTH, ${FIO_SECS}s, unix socket)"
echo "server CPU (median): ms per GiB of image for nbdcopy, us per request for fio; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(nproc) cores, $(uname -r), $(qemu-nbd --version | head -1 | cut -d' ' -f1-2), $(nbdkit --version), $(nbdcopy --version | head -1), $(fio --version)"
python3 - "$RES" <<'EOF'
import sys, statistics, collections
vals = collections.defaultdict(list)
cpus = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, test, content, rep, mbs, cpu = line.split()
    vals[(test, content, s)].append(float(mbs))
    cpus[(test, content, s)].append(float(cpu))
keys = []
for (test, content, s) in vals:
    if (test, content) not in keys:
        keys.append((test, content))
med = {k: statistics.median(v) for k, v in vals.items()}
cmed = {k: statistics.median(v) for k, v in cpus.items()}
hdr = f"| {'test':<26} | {'content':<7} | {'blockwise':>9} | {'qemu-nbd':>9} | {'nbdkit':>9} | {'bw/qemu':>7} | {'bw/nbdkit':>9} | {'goal vs qemu':>12} | {'cpu bw':>6} | {'cpu nbdkit':>10} |"
print(hdr)
print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
for test, content in keys:
    b, q, k = (med.get((test, content, s), float("nan")) for s in ("blockwise", "qemu-nbd", "nbdkit"))
    goal = 1.0 if test.startswith("fio") else 1.2
    rq, rk = b / q, b / k
    ok = "ok" if rq >= goal else "MISS"
    cb, ck = (cmed.get((test, content, s), float("nan")) for s in ("blockwise", "nbdkit"))
    print(f"| {test:<26} | {content:<7} | {b:9.0f} | {q:9.0f} | {k:9.0f} | {rq:7.2f} | {rk:9.2f} | {'>=%.1f %s' % (goal, ok):>12} | {cb:6.0f} | {ck:10.0f} |")
EOF
echo "elapsed $(printf '%.0f' "$(echo "$(secs) - $START" | bc -l)") s (plus setup)"
if [ "${PROFILE:-0}" = 1 ]; then
	for c in random mixed; do
		echo; echo "== blockwise CPU profile, $c content =="
		go tool pprof -top -nodecount=35 "$W/bin/profserve" "$W/cpu-$c.pprof" 2>/dev/null | head -45
	done
fi
